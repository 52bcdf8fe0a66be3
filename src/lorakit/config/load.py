"""Load a layered config: schema defaults < CONFIG < each --add overlay < each --set.

Every leaf remembers the layer that set it, so a validation error can say
``lora.r: Input should be greater than 0 (from --set lora.r=0)``. Relative paths in a config
file (data files, adapters to start from) are resolved against that file's folder, so a config
works from any working directory.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lorakit.config.schema import RunConfig
from lorakit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# Keys whose relative values are file paths, resolved against the declaring file's folder.
PATH_KEYS = ("data.train", "data.eval", "lora.init_from")


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
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {path} must end in .yaml, .yml or .toml")
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
    return key.split("."), value


def _merge(base: dict[str, Any], layer: dict[str, Any], label: str, sources: dict[str, str],
           prefix: str = "", base_dir: Path | None = None) -> None:
    """Deep-merge ``layer`` into ``base`` in place, recording the label of every leaf it sets."""
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if base_dir is not None and dotted in PATH_KEYS:
            value = _resolve_paths(value, base_dir)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, label, sources, f"{dotted}.", base_dir)
        else:
            base[key] = value
            for stale in [k for k in sources if k.startswith(f"{dotted}.")]:
                del sources[stale]
            sources[dotted] = label
            if isinstance(value, dict):
                for leaf in _leaves(value, f"{dotted}."):
                    sources[leaf] = label


def _leaves(tree: dict[str, Any], prefix: str) -> Iterable[str]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


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


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        keys.append(name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_known_keys(annotation, f"{prefix}{name}."))
    return keys


def _source_of(dotted: str, key_sources: dict[str, str]) -> str:
    probe = dotted
    while probe:
        if probe in key_sources:
            return key_sources[probe]
        probe = probe.rpartition(".")[0]
    return "defaults"


def validate(raw: dict[str, Any], key_sources: dict[str, str], sources: Sequence[str]) -> RunConfig:
    """Validate a merged config dict; on failure list every problem at once, with its origin."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"invalid config (merged from {', '.join(sources) or 'defaults'}):"]
        for err in e.errors():
            loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
            key = ".".join(loc) or "<top level>"
            msg = err["msg"].removeprefix("Value error, ")
            origin = _source_of(key, key_sources)
            if err["type"] == "extra_forbidden":
                guess = difflib.get_close_matches(loc[-1], _known_keys(RunConfig), n=1)
                msg = "unknown key" + (f", did you mean {guess[0]!r}?" if guess else "")
            elif err["type"] == "missing":
                msg = "required key is missing"
                origin = "not set in any layer"
            else:
                msg += f" (got {err['input']!r})"
            lines.append(f"  {key}: {msg} [{origin}]")
        raise ConfigError("\n".join(lines)) from None


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
    config = validate(raw, key_sources, sources)
    base_name = name or config.output.name or files[0].stem
    run_name = "-".join([base_name, *(Path(o).stem for o in overlays)])
    return LoadedConfig(config, files, tuple(overrides), key_sources, run_name)
