"""The untrained adapter's evaluation, remembered: every fresh run evaluates at step 0, the baseline its steps must
beat, and a fresh LoRA adapter (every ``lora_B`` zero) adds exactly nothing to its base model's output. So runs on
the same base, validation set and evaluation settings (a sweep's trials, a run started again with another learning
rate or rank) all compute the same step-0 metrics and answers, to the last bit: the first computes them, the
others read them (``$LORAKIT_CACHE/baselines``, default ``~/.cache/lorakit``).

The key is the sha256 of everything the numbers depend on: the base model's identity (its content hash, or its
weight files' device, inode, size and times), every validation row's token ids and each generated case's prompt
and reference, the evaluation settings, the device, dtype and thread count, the package versions and lorakit's own
source. An adapter that is not the identity at step 0 (DoRA, an ``init_from`` adapter, PiSSA-style inits) is
always evaluated.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from lorakit.atomic import write_json_atomic
from lorakit.model.digest_memo import file_stamp
from lorakit.model.resolve import cache_home

log = logging.getLogger(__name__)

LORA_WEIGHTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")


def memo_folder() -> Path:
    return cache_home() / "baselines"


def adds_nothing(model: Any) -> bool:
    """Whether the adapter's output is exactly zero: only LoRA A/B matrices train, and every B (which multiplies
    the rest) is zero."""
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if not any(f".{kind}." in name for kind in LORA_WEIGHTS):
            return False  # DoRA's magnitudes, modules_to_save, a trained embedding: not a plain sum
        if ("lora_B" in name or "lora_embedding_B" in name) and bool(param.detach().any()):
            return False
    return True


def baseline_key(session: Any, prompts: list[list[int]], references: list[str], settings: dict[str, Any]) -> str:
    """The sha256 of what the step-0 evaluation of ``session`` depends on (see the module docstring):
    ``prompts`` are the generated cases' token ids as the decoder gets them (template and wrapping applied)."""
    from lorakit.runs.provenance import package_versions

    digest = hashlib.sha256()

    def add(value: Any) -> None:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())
        digest.update(b"\0")

    dtype = next(session.model.parameters()).dtype
    add({"base": _base_identity(session.resolved), "versions": {**package_versions(), **_metric_versions()},
         "source": _source_digest(), "device": str(session.accelerator.device), "dtype": str(dtype),
         "threads": torch.get_num_threads(), "settings": settings})
    for example in session.datasets.eval:
        add([example.input_ids, example.labels])
    for prompt, reference in zip(prompts, references, strict=True):
        add([prompt, reference])
    return digest.hexdigest()


def _metric_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("sacrebleu", "typst"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def recall(key: str) -> tuple[dict[str, Any], list[str] | None] | None:
    """The metrics and answers (None: no generated metrics) remembered under ``key``; None when there are none
    (or they cannot be read)."""
    path = memo_folder() / f"{key}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        answers = saved["answers"]
        return dict(saved["metrics"]), None if answers is None else [str(a) for a in answers]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(key: str, metrics: dict[str, Any], answers: list[str] | None) -> None:
    """Kept for the next run; a cache that cannot be written costs that run the evaluation, nothing more."""
    try:
        memo_folder().mkdir(parents=True, exist_ok=True)
        write_json_atomic(memo_folder() / f"{key}.json", {"metrics": metrics, "answers": answers})
    except OSError as e:
        log.debug("step-0 evaluation not remembered: %s", e)


def _base_identity(resolved: Any) -> dict[str, Any]:
    """The base model's content hash or commit where lorakit has one; else its weight files' stamps (any write
    changes a file's change time, which no user call can set back)."""
    identity = {k: v for k, v in resolved.identity.items() if k != "file"}
    if identity.get("sha256") or identity.get("commit") or identity.get("revision"):
        return identity
    folder = Path(resolved.path)
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return {**identity, "weights": {w.name: file_stamp(w) for w in weights}}


def _source_digest() -> str:
    """lorakit's own code, so a change to how it evaluates never reads an older result."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
