"""LLaMA-Factory's dataset registry (``dataset_info.json``), read where ``data.train`` names it.

``data.train: data/dataset_info.json#identity,alpaca_en_demo`` reads each named dataset the way
LLaMA-Factory would: its ``file_name`` (beside the registry; a folder means every data file in
it), its ``formatting`` (alpaca or sharegpt), the ``columns`` that say which field holds what, the
``tags`` that name speakers in sharegpt messages, and ``num_samples``. Each row is rewritten into
lorakit's own field names, so the formats, the refusals (``ranking`` pairs, ``kto_tag``, images)
and the reports are the same as for a plain file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.data.formats import FormatOptions
from lorakit.data.messages import CALL, Tags
from lorakit.data.sources import SUFFIXES
from lorakit.errors import DataError
from lorakit.textfile import read_json

REGISTRY_NAME = "dataset_info.json"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
# LLaMA-Factory column roles -> lorakit's field names (the same in both formattings).
SHARED_COLUMNS = {"history": "history", "system": "system", "tools": "tools", "images": "images",
                  "videos": "videos", "audios": "audios", "chosen": "chosen", "rejected": "rejected",
                  "kto_tag": "label"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


@dataclass(frozen=True)
class Source:
    """One file to read, and how to read its rows."""

    path: Path
    label: str  # how reports name it: the file, or registry#dataset
    entry: RegistryEntry | None = None

    @property
    def options(self) -> FormatOptions:
        return FormatOptions(tags=self.entry.tags) if self.entry else FormatOptions()

    def canonical(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.entry.canonical(row) if self.entry else row


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    formatting: str
    columns: dict[str, str] = field(default_factory=dict)
    tags: Tags | None = None
    num_samples: int | None = None

    def canonical(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row under lorakit's field names; fields the entry does not map stay, to be reported."""
        out = dict(row)
        if self.formatting == "alpaca":
            prompt = self.columns.get("prompt", "instruction")
            if set(self.columns) <= {"prompt"} and self.columns.get("response", "output") not in row and prompt in row:
                return {"text": out.pop(prompt), **out}  # a pre-training set: the prompt column is the text
            fields = {**ALPACA_COLUMNS, **SHARED_COLUMNS}
        else:
            fields = {"messages": "conversations", **SHARED_COLUMNS}
        for role, ours in fields.items():
            theirs = self.columns.get(role, ours)
            if theirs != ours and theirs in out:
                out[ours] = out.pop(theirs)
        return out


def is_registry_ref(ref: str) -> bool:
    """``path/dataset_info.json`` with or without ``#names``, or any ``file#names`` that is not itself a file."""
    path, _, _ = ref.partition("#")
    return Path(path).name == REGISTRY_NAME or ("#" in ref and not Path(ref).is_file())


def sources(refs: Iterable[str]) -> list[Source]:
    """The files behind ``data.train`` entries: plain files as they are, registry names expanded.

    Raises:
        DataError: a registry that is missing or malformed, an unknown dataset name, a dataset that
            lives only on a hub, or a registry named without datasets.
    """
    out: list[Source] = []
    for ref in refs:
        if not is_registry_ref(ref):
            out.append(Source(Path(ref), ref))
            continue
        path, _, names = ref.partition("#")
        registry = _read_registry(Path(path))
        if not names.strip():
            raise DataError(f"{path} is a LLaMA-Factory dataset registry: name the datasets to use, e.g. "
                            f"{path}#{next(iter(registry), 'NAME')} (several: #a,b)")
        for name in (n.strip() for n in names.split(",") if n.strip()):
            out += _entry_sources(Path(path), registry, name)
    return out


def data_files(refs: Iterable[str]) -> list[str]:
    """Every file ``data.train``/``data.eval`` reads: registries and their datasets included."""
    files: list[str] = []
    for ref in refs:
        if is_registry_ref(ref):
            files.append(ref.partition("#")[0])
        files += [str(s.path) for s in sources([ref])]
    return list(dict.fromkeys(files))


def _read_registry(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"dataset registry not found: {path}")
    return read_json(path, DataError, dict, "a dataset registry maps names to datasets")


def _entry_sources(registry_path: Path, registry: dict[str, Any], name: str) -> list[Source]:
    where = f"{registry_path}#{name}"
    spec = registry.get(name)
    if not isinstance(spec, dict):
        import difflib

        guess = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        raise DataError(f"{where}: no dataset named {name!r} in the registry{hint}")
    if "file_name" not in spec:
        hub = next((f"{k}: {spec[k]}" for k in HUB_KEYS if k in spec), "no file_name")
        raise DataError(f"{where}: the dataset is not a local file ({hub}); lorakit reads local files: "
                        "download it beside the registry and give its file_name")
    entry = _entry(name, spec, where)
    target = registry_path.parent / str(spec["file_name"])
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError(f"{where}: folder {target} holds no data files ({', '.join(SUFFIXES)})")
    elif target.is_file():
        files = [target]
    else:
        raise DataError(f"{where}: data file not found: {target}")
    return [Source(f, where, entry) for f in files]


def _entry(name: str, spec: dict[str, Any], where: str) -> RegistryEntry:
    formatting = spec.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise DataError(f"{where}: formatting must be alpaca or sharegpt (got {formatting!r})")
    columns, tags = spec.get("columns", {}), spec.get("tags", {})
    if not isinstance(columns, dict) or not isinstance(tags, dict):
        raise DataError(f"{where}: columns and tags must be objects")
    num_samples = spec.get("num_samples")
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
        raise DataError(f"{where}: num_samples must be a positive whole number (got {num_samples!r})")
    return RegistryEntry(name, formatting, {str(k): str(v) for k, v in columns.items()},
                         _tags(tags) if formatting == "sharegpt" else None, num_samples)


def _tags(declared: dict[str, Any]) -> Tags:
    tags = {**SHAREGPT_TAGS, **{k: str(v) for k, v in declared.items()}}
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["observation_tag"]: "tool",
             tags["function_tag"]: CALL, tags["system_tag"]: "system"}
    return Tags(tags["role_tag"], tags["content_tag"], roles)
