"""Load a layered config: schema defaults < CONFIG < each --add overlay < each --set.

Every leaf remembers the layer that set it, so a validation error can say
``lora.r: Input should be greater than 0 (from --set lora.r=0)``. Relative paths in a config
file (data files, adapters to start from) are resolved against that file's folder, so a config
works from any working directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorakit.config.init_from import inherit_adapter_shape
from lorakit.config.memory import MemorySettings
from lorakit.config.problems import refuse_peer_config, validate
from lorakit.config.run_name import expand_run_name
from lorakit.config.schema import RunConfig, is_folder_name
from lorakit.errors import ConfigError
from lorakit.textfile import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# Keys whose relative values are file paths, resolved against the declaring file's folder.
PATH_KEYS = ("data.train", "data.eval", "lora.init_from", "train.oom.overlay", "train.sample_prompts",
             "tracking.copy_files")
PATH_PREFIXES = ("tracking.repos.",)  # every value under these is a path


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with where each part came from."""

    config: RunConfig
    files: tuple[Path, ...]  # CONFIG then each overlay, in order
    overrides: tuple[str, ...]  # the --set strings, in order
    key_sources: dict[str, str] = field(repr=False)
    run_name: str = ""

    @property
    def sources(self) -> list[str]:
        """The layers in the order they were applied."""
        return [str(f) for f in self.files] + [f"--set {o}" for o in self.overrides]

    @property
    def sha256(self) -> str:
        return config_sha256(self.config)

    def to_yaml(self) -> str:
        return render_yaml(self.config)


def config_sha256(config: RunConfig) -> str:
    """Hash of the resolved config: the same settings give the same hash, whatever the layers."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def render_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse one YAML or TOML file into a dict; errors name the file and line."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix.lower() not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"config file {path} must end in .yaml, .yml or .toml")
    text = read_text(path, ConfigError)
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"invalid YAML at {where}: {getattr(e, 'problem', e)}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML in {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (got {type(data).__name__})")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-typed value (``8`` is an int)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set needs KEY=VALUE with a dotted key, e.g. --set lora.r=8 (got {text!r})")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict) and value and all(v is None for v in value.values()):
        value = raw.strip()  # YAML reads {data} as a mapping with no values: meant as a placeholder (output.name)
    if isinstance(value, str):
        # YAML 1.1 reads 1e-4 as a string; a user typing it means a number.
        with contextlib.suppress(ValueError):
            value = float(value)
    return key.split("."), value


def _merge(base: dict[str, Any], layer: dict[str, Any], label: str, sources: dict[str, str],
           prefix: str = "", base_dir: Path | None = None) -> None:
    """Deep-merge ``layer`` into ``base`` in place, recording the label of every leaf it sets."""
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if base_dir is not None and (dotted in PATH_KEYS or dotted.startswith(PATH_PREFIXES)):
            value = _resolve_paths(value, base_dir)
        if isinstance(value, dict):
            if not isinstance(base.get(key), dict):
                _forget(sources, dotted)
                base[key] = {}
            _merge(base[key], value, label, sources, f"{dotted}.", base_dir)
        else:
            base[key] = value
            _forget(sources, dotted)
            sources[dotted] = label


def merge_into(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``layer`` into ``base`` (in place, and returned): the same rule as config layers."""
    _merge(base, layer, "", {})
    return base


def _forget(sources: dict[str, str], dotted: str) -> None:
    """Drop the recorded origins of a key and everything under it (it is being replaced)."""
    for stale in [k for k in sources if k == dotted or k.startswith(f"{dotted}.")]:
        del sources[stale]


def _resolve_paths(value: Any, base_dir: Path) -> Any:
    if isinstance(value, list):
        return [_resolve_paths(v, base_dir) for v in value]
    if isinstance(value, str) and value and not os.path.isabs(value):
        return _display_path(base_dir / value)
    return value


def _display_path(path: Path) -> str:
    """Absolute, normalised, but shown relative to the working directory when under it."""
    absolute = Path(os.path.normpath(path.absolute()))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def load_config(
    config_file: str | Path,
    overlays: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    name: str | None = None,
) -> LoadedConfig:
    """Merge CONFIG, overlays and ``--set`` overrides, validate, and name the run.

    Args:
        config_file: The base YAML or TOML file.
        overlays: Files applied in order after the base (``--add``); their stems suffix the run name.
        overrides: ``KEY=VALUE`` strings applied last (``--set``).
        name: Run name that replaces output.name and the config stem (``--name``).

    Returns:
        The validated config, its layers and the run name (without its ``-vNNN`` version).

    Raises:
        ConfigError: every problem found, one per line, each with its key and layer.
    """
    files = tuple(Path(f) for f in (config_file, *overlays))
    raw: dict[str, Any] = {}
    key_sources: dict[str, str] = {}
    problems: list[str] = []
    for path in files:
        try:
            _merge(raw, read_config_file(path), str(path), key_sources, base_dir=path.parent)
        except ConfigError as e:
            problems.append(str(e))
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except ConfigError as e:
            problems.append(str(e))
            continue
        layer: dict[str, Any] = {}
        node = layer
        for part in keys[:-1]:
            node = node.setdefault(part, {})
        node[keys[-1]] = value
        _merge(raw, layer, f"--set {text}", key_sources)
    if problems:
        raise ConfigError("\n".join(problems))
    sources = [str(f) for f in files] + [f"--set {o}" for o in overrides]
    refuse_peer_config(raw, key_sources)
    inherit_adapter_shape(raw, key_sources)
    config = validate(raw, key_sources, sources)
    run_name = expand_run_name(name or config.output.name or files[0].stem, config, [Path(o).stem for o in overlays])
    if not is_folder_name(run_name):
        raise ConfigError(f"run name must be a plain folder name (got {run_name!r}); change --name or output.name")
    return LoadedConfig(config, files, tuple(overrides), key_sources, run_name)


def load_recorded_config(recorded: dict[str, Any], working_directory: Path, run_name: str,
                         files: Sequence[str] = ()) -> LoadedConfig:
    """A run's config as its manifest recorded it, relative paths rebased on the run's working directory.

    Raises:
        ConfigError: the recorded config no longer validates (written by another lorakit version).
    """
    raw: dict[str, Any] = {}
    key_sources: dict[str, str] = {}
    _merge(raw, recorded, "manifest.json", key_sources, base_dir=working_directory)
    config = validate(raw, key_sources, ["manifest.json"])
    return LoadedConfig(config, tuple(Path(f) for f in files), (), key_sources, run_name)


def with_absolute_paths(config: RunConfig) -> dict[str, Any]:
    """The config as a dict with every path value absolute, to be written where relative paths would break."""
    raw = config.model_dump(mode="json")
    for dotted, value in flatten_keys(raw).items():
        if value and (dotted in PATH_KEYS or dotted.startswith(PATH_PREFIXES)):
            *parents, leaf = dotted.split(".")
            node = raw
            for part in parents:
                node = node[part]
            node[leaf] = [os.path.abspath(v) for v in value] if isinstance(value, list) else os.path.abspath(value)
    return raw


def flatten_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def apply_oom_overlay(config: RunConfig) -> tuple[RunConfig, str] | None:
    """The config with ``train.oom.overlay`` applied, and what it changed; None without an overlay.

    Raises:
        ConfigError: the file is missing or invalid, sets a key that cannot change mid-run, or
            changes the effective batch (micro_batch_size x grad_accum).
    """
    if config.train.oom.overlay is None:
        return None
    path = Path(config.train.oom.overlay)
    raw = config.model_dump(mode="json")
    leaves: dict[str, str] = {}  # every key the overlay sets -> its file
    _merge(raw, read_config_file(path), str(path), leaves)
    allowed = MemorySettings.KEYS.values()
    refused = [k for k in leaves if k not in allowed]
    if refused:
        raise ConfigError(f"train.oom.overlay {path}: {', '.join(refused)} cannot change during a run; "
                          f"an out-of-memory overlay may set {', '.join(allowed)}")
    new = validate(raw, leaves, [str(path)])
    before = config.train.micro_batch_size * config.train.grad_accum
    after = new.train.micro_batch_size * new.train.grad_accum
    if before != after:
        raise ConfigError(f"train.oom.overlay {path}: micro_batch_size x grad_accum goes from {before} to {after}; "
                          "keep the product so the effective batch stays the same")
    old = flatten_keys(config.model_dump(mode="json"))
    changes = [f"{k} {old[k]} -> {v}" for k, v in flatten_keys(new.model_dump(mode="json")).items()
               if k in leaves and old[k] != v]
    return new, f"{path.name}: {', '.join(changes) or 'no change'}"
