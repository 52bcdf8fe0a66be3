"""A DPO run's reference log-probabilities: measured once on the model as the run starts, kept in the run
folder (``reference_logps.json``) so a resumed run, whose adapter has moved, scores against the same
reference as the run it continues.

The file names the pairs it was measured on by a hash of their tokens; a resumed run whose data no longer
hashes the same is refused rather than trained against another data's reference.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from typing import Any

from lorakit.data.dataset import Datasets
from lorakit.data.tokenize import Pair
from lorakit.errors import ConfigError
from lorakit.runs.folder import RunFolder
from lorakit.runs.manifest import write_json_atomic

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference_logps.json"


def pairs_sha256(pairs: list[Pair]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        for side in (pair.chosen, pair.rejected):
            digest.update(json.dumps([side.input_ids, side.labels]).encode())
    return digest.hexdigest()


def with_reference(datasets: Datasets, model: Any, run: RunFolder, settings: Any, pad_id: int, device: Any,
                   is_main: bool, trained: set[int] | None = None) -> Datasets:
    """The datasets' pairs with their reference log-probabilities: read back from the run folder when it has
    them (a resumed run), else measured now on ``model`` and written there.

    ``trained``: the indices of the training pairs the run's steps hold; only they are measured (a run of
    ``max_steps`` over a large preference set would otherwise wait for pairs it never trains on), the others
    keep no reference (``null`` in the file).

    Raises:
        ConfigError: the run folder's reference was measured on other pairs than this data's.
    """
    splits = {"train": datasets.train, "eval": datasets.eval}
    path = run.path / REFERENCE_FILE
    hashes = {name: pairs_sha256(pairs) for name, pairs in splits.items()}  # type: ignore[arg-type]
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        for name in splits:
            if saved[name]["pairs_sha256"] != hashes[name]:
                raise ConfigError(f"{path}: measured on other {name} pairs than this data's; the run cannot be "
                                  "continued on changed data: start a new run")
        measured = {name: [replace(p, reference=None if v is None else tuple(v))
                           for p, v in zip(pairs, saved[name]["logps"], strict=True)]
                    for name, pairs in splits.items()}
        log.info("reference log-probabilities read from %s", REFERENCE_FILE)
    else:
        wanted = {"train": trained, "eval": None}
        measured = {name: _measured(pairs, wanted[name], model, settings, pad_id, device)  # type: ignore[arg-type]
                    for name, pairs in splits.items()}
        if is_main:
            write_json_atomic(path, {name: {"pairs_sha256": hashes[name],
                                            "logps": [None if p.reference is None else list(p.reference)
                                                      for p in pairs]}
                                     for name, pairs in measured.items()})
        counts = {name: sum(p.reference is not None for p in pairs) for name, pairs in measured.items()}
        rest = len(measured["train"]) - counts["train"]
        log.info("reference log-probabilities of %d training and %d validation pairs measured%s", counts["train"],
                 counts["eval"], f" ({rest} training pairs are in none of the run's steps)" if rest else "")
    return replace(datasets, train=measured["train"], eval=measured["eval"])


def _measured(pairs: list[Pair], wanted: set[int] | None, model: Any, settings: Any, pad_id: int,
              device: Any) -> list[Pair]:
    """``pairs`` with the reference measured on those at the ``wanted`` indices (all of them by default)."""
    from lorakit.train.preference import measure_reference

    indices = range(len(pairs)) if wanted is None else sorted(wanted)
    done = measure_reference(model, [pairs[i] for i in indices], settings.micro_batch_size, pad_id,
                             settings.loss_chunk_tokens, device)
    result = list(pairs)
    for index, pair in zip(indices, done, strict=True):
        result[index] = pair
    return result
