"""What the queue takes from a dataset folder, which anyone who can write to the remote may have made.

A dataset folder's own ``lorakit.yaml`` may describe its data and its training, nothing else:

- it may set ``data.*``, ``lora.*``, ``train.*``, ``dpo.*``, ``output.name``, and ``model.name_or_path`` /
  ``model.revision`` as a built-in model or a hub id;
- every path it names (data files, a registry and the files the registry names, ``lora.init_from``,
  ``train.oom.overlay``, ``train.sample_prompts``) resolves inside the dataset folder after symlinks
  are followed;
- it may not set ``tracking.*`` (copying or recording local files), ``output.dir``, ``launch.*``, a
  local model path, or anything of the trainer.

The data files the queue finds on its own, and every symbolic link in the folder, stay inside it too.
A dataset that breaks a rule fails alone, with one line naming the key and the rule; the queue goes on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lorakit.config.load import flatten_keys, read_config_file
from lorakit.errors import DataError

DATASET_CONFIGS = ("lorakit.yaml", "lorakit.yml", "lorakit.toml")
MAY_SET_SECTIONS = ("data", "lora", "train", "dpo")
MAY_SET_KEYS = ("output.name", "model.name_or_path", "model.revision")
PATH_KEYS = ("data.train", "data.eval", "lora.init_from", "train.oom.overlay", "train.sample_prompts")
RULE = ("a dataset folder may set data.*, lora.*, train.*, dpo.*, output.name and model.name_or_path (a built-in model "
        "or a hub id); the workspace's config and overlays set the rest")


def dataset_config(folder: Path) -> Path | None:
    """The dataset folder's own config file, if it has one."""
    return next((folder / n for n in DATASET_CONFIGS if (folder / n).is_file()), None)


def check_dataset_config(own: Path) -> dict[str, Any]:
    """The dataset's own config, once every key it sets is one a dataset may set.

    Raises:
        DataError: the first key it may not set, with the rule.
    """
    raw = read_config_file(own)
    for key, value in flatten_keys(raw).items():
        section = key.split(".", 1)[0]
        if section not in MAY_SET_SECTIONS and key not in MAY_SET_KEYS:
            raise DataError(f"{own}: {key}: {RULE}")
        if key == "model.name_or_path" and _names_local_model(str(value)):
            raise DataError(f"{own}: model.name_or_path: {value!r} names a local path; a dataset folder may name a "
                            "built-in model or a hub id only")
    return raw


def _names_local_model(value: str) -> bool:
    from lorakit.model.resolve import BUILTIN_MODELS

    if value in BUILTIN_MODELS:
        return False
    path = Path(value).expanduser()
    return (value.startswith((".", "/", "~")) or ".." in Path(value).parts or path.suffix.lower() == ".gguf"
            or path.exists() or value.count("/") != 1)


def check_inside(folder: Path, key: str, paths: list[str], where: Path | str) -> None:
    """Every path resolves inside ``folder`` once symlinks are followed.

    Raises:
        DataError: the first one that does not, naming ``key`` and ``where`` it was set.
    """
    root = folder.resolve()
    for path in paths:
        resolved = Path(os.path.realpath(path))
        if resolved != root and root not in resolved.parents:
            raise DataError(f"{where}: {key}: {path} is outside the dataset folder{_via_link(path, resolved)}; "
                            "a dataset's paths must stay inside its folder")


def _via_link(path: str, resolved: Path) -> str:
    return f" (a link to {resolved})" if os.path.abspath(path) != str(resolved) else ""


def check_own_paths(config: Any, own_keys: list[str], folder: Path, own: Path) -> None:
    """The paths the dataset's own config set (``own_keys``), as the merged ``config`` resolved them, including
    every file a data registry names.

    Raises:
        DataError: a path outside the folder.
    """
    from lorakit.data.registry import data_files

    values = flatten_keys(config.model_dump(mode="json"))
    for key in PATH_KEYS:
        if not any(k == key or k.startswith(f"{key}.") for k in own_keys) or not values.get(key):
            continue
        paths = values[key] if isinstance(values[key], list) else [values[key]]
        check_inside(folder, key, [str(p).partition("#")[0] for p in paths], own)
        if key in ("data.train", "data.eval"):
            check_inside(folder, key, data_files(paths), own)


def check_links(folder: Path) -> None:
    """No symbolic link in the dataset folder points outside it (a download or an archive could bring one).

    Raises:
        DataError: the first that does.
    """
    links = [str(p) for p in folder.rglob("*") if p.is_symlink()]
    check_inside(folder, "link", links, folder)
