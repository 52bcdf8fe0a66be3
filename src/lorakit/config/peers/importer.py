"""``lorakit config import``: a LLaMA-Factory or axolotl config written as a lorakit config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from lorakit.config.load import read_config_file
from lorakit.config.peers import axolotl, llamafactory, looks_like
from lorakit.config.peers.translation import Line
from lorakit.config.problems import config_problem
from lorakit.config.schema import RunConfig
from lorakit.errors import ConfigError

TRANSLATORS = {"llamafactory": llamafactory.translate, "axolotl": axolotl.translate}


@dataclass(frozen=True)
class Imported:
    peer: str
    out: Path
    lines: list[Line]


def import_config(source: str | Path, peer: str | None = None, out: str | Path | None = None,
                  dataset_dir: str | None = None, force: bool = False) -> Imported:
    """Translate ``source``, check the result against lorakit's schema, and write it.

    Raises:
        ConfigError: the file is not a config of a known trainer, the result does not validate (naming
            what to add), or ``out`` exists and ``force`` was not given.
    """
    source = Path(source)
    raw = read_config_file(source)
    peer = peer or looks_like(raw)
    if peer not in TRANSLATORS:
        raise ConfigError(f"{source}: cannot tell which trainer wrote it; give --from llamafactory or --from axolotl")
    target = Path(out) if out else Path(f"{source.stem}.lorakit.yaml")
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; choose another --out or add --force to replace it")
    translation = TRANSLATORS[peer](raw, source, target.parent, dataset_dir)
    try:
        RunConfig.model_validate(translation.config)
    except ValidationError as e:
        raise ConfigError(f"{source}: the imported config does not validate ({_problems(e)}); change {source} or "
                          "write the fix into the result") from None
    header = f"# imported from {source} ({peer}) by lorakit config import\n"
    text = header + yaml.safe_dump(translation.config, sort_keys=False, allow_unicode=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    if target.exists() and not force:  # appeared while translating: keep it
        partial.unlink()
        raise ConfigError(f"{target} exists; choose another --out or add --force to replace it")
    os.replace(partial, target)
    order = {key: index for index, key in enumerate(raw)}  # the file's own order, lorakit's defaults last
    lines = sorted(translation.lines, key=lambda line: order.get(line.key, len(order)))
    return Imported(peer, target, lines)


def _problems(error: ValidationError) -> str:
    """Each problem as ``key: what``; a missing key says nothing in the source became it, a check across keys
    (data.eval with data.val_size) says it without pydantic's prefix."""
    problems = []
    for err in error.errors():
        loc, what = config_problem(err)
        if err["type"] == "missing":
            what = "required, and nothing in the source sets it"
        problems.append(f"{'.'.join(loc)}: {what}" if loc else what)
    return "; ".join(problems)
