"""An external trainer's config and command, rendered for one run.

The config keeps its template's format (TOML for sd-scripts, YAML or JSON for LLaMA-Factory):
overlays and ``--set`` values are merged in with the same rule as lorakit's own config layers,
placeholders (``{dataset}``, ``{output_dir}``...) are filled in every string, and a null is
written as the format writes it (YAML ``null``, JSON ``null``; TOML has none, so the key is left out,
which is what every TOML reader makes of a missing value).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lorakit.config.load import merge_into, parse_override, read_config_file
from lorakit.errors import ConfigError, LaunchError
from lorakit.textfile import read_json

FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def read_template(path: Path) -> dict[str, Any]:
    """A config template or overlay as a mapping: TOML, YAML or JSON.

    Raises:
        ConfigError: missing, unparseable, not a mapping, or another format.
    """
    if path.suffix.lower() != ".json":
        if path.suffix.lower() not in FORMATS:
            raise ConfigError(f"trainer config {path} must end in .toml, .yaml, .yml or .json")
        return read_config_file(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return read_json(path, ConfigError, dict, f"config file {path} must hold a mapping")


def fill(value: Any, values: Mapping[str, str]) -> Any:
    """``value`` with every ``{name}`` of ``values`` replaced inside every string (keys stay as they are)."""
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if isinstance(value, str):
        for key, text in values.items():
            value = value.replace("{" + key + "}", text)
    return value


def render_config(template: Path, layers: Sequence[Path], overrides: Sequence[str],
                  values: Mapping[str, str], rungs: Sequence[Path] = ()) -> dict[str, Any]:
    """The template, each overlay merged in order, each ``KEY=VALUE``, then the out-of-memory ``rungs`` taken so
    far; placeholders filled.

    The rungs come last because each one is written to keep the effective batch of what it steps down from:
    a ``--set train_batch_size=8`` applied after a rung would undo it.

    Raises:
        ConfigError: a file that cannot be read, or a ``--set`` that is not KEY=VALUE.
    """
    config = read_template(template)
    for layer in layers:
        merge_into(config, read_template(layer))
    for text in overrides:
        keys, value = parse_override(text)
        node = config
        for part in keys[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[keys[-1]] = value
    for rung in rungs:
        merge_into(config, read_template(rung))
    return fill(config, values)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def dump_config(config: dict[str, Any], fmt: str) -> str:
    """The config as text in ``fmt`` (toml, yaml, json)."""
    if fmt == "toml":
        import tomli_w

        return tomli_w.dumps(_without_nulls(config))
    if fmt == "json":
        return json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def rendered_name(template: Path) -> str:
    """What the rendered config is called in the run folder: ``config`` with the template's extension."""
    return f"config{template.suffix.lower()}"


def dotted(config: Mapping[str, Any], key: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; None when a part is missing."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# Programs that run the argument after one of these short flags as code: a script, not a value.
CODE_FLAGS = {"sh": "c", "bash": "c", "dash": "c", "zsh": "c", "ksh": "c", "fish": "c", "busybox": "c", "su": "c",
              "python": "c", "perl": "e", "ruby": "e", "node": "e"}
REMOTE_SHELLS = ("ssh",)  # joins every argument after the host into one command line for a remote shell
NAMED_VALUES = ("dataset", "output_dir", "output_name", "run", "config", "python")


def env_name(key: str) -> str:
    """The environment variable a placeholder's value is also given to the trainer in: LORAKIT_DATASET,
    LORAKIT_OUTPUT_DIR, ... and LORAKIT_REPO_<NAME> for a repo."""
    if key in NAMED_VALUES:
        return f"LORAKIT_{key.upper()}"
    return "LORAKIT_REPO_" + "".join(c if c.isalnum() else "_" for c in key.upper())


def value_environment(values: Mapping[str, str]) -> dict[str, str]:
    """Every placeholder value under its environment variable (``env_name``), for scripts to read."""
    return {env_name(key): value for key, value in values.items()}


def render_command(template: str, values: Mapping[str, str], strict: bool = True) -> list[str]:
    """The command template as an argument list; every filled-in value lands inside one argument, whatever it
    holds: the template is split into arguments first, then filled, so no value is ever parsed as syntax.

    A placeholder inside code that a program of the command runs (``bash -c "cd {dataset} && ..."``,
    ``python -c``, ssh's remote command) is refused: a dataset's name would run as a command there. Such
    scripts read the values from the environment instead (``env_name``), which lorakit sets for the trainer.

    ``strict``: an unknown ``{placeholder}`` is an error (a trainer file); otherwise only the known ones
    are replaced and other braces are left as typed (a command line given as it stands).

    Raises:
        ConfigError: a placeholder with no value, or one inside code.
    """
    try:
        words = shlex.split(template)
    except ValueError as e:
        raise ConfigError(f"trainer.command: {e} in {template!r}") from None
    filled = []
    for i, word in enumerate(words):
        used = _placeholders(word, values, strict)
        if used and _is_code(words, i):
            raise ConfigError(f"trainer.command: {{{used[0]}}} is inside a script ({word!r}), where a dataset or "
                              f"folder name would run as a command; write \"${env_name(used[0])}\" there instead "
                              f"(lorakit sets it for the trainer), or pass {{{used[0]}}} as an argument of its own")
        filled.append(word.format_map(values) if strict else fill(word, values))
    return filled


def _placeholders(word: str, values: Mapping[str, str], strict: bool) -> list[str]:
    """The known placeholders in one argument; with ``strict`` an unknown one or a stray brace is an error."""
    import string

    if not strict:
        return [k for k in values if "{" + k + "}" in word]
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(word) if name is not None]
    except ValueError as e:  # a lone brace
        raise ConfigError(f"trainer.command: {e} in {word!r}; write a literal brace as {{{{ or }}}}") from None
    for name in fields:
        if name not in values:
            raise ConfigError(f"trainer.command: unknown placeholder {{{name}}} in {word!r}; known: "
                              f"{', '.join('{' + k + '}' for k in values)} (a literal brace is {{{{ or }}}})")
    return fields


def _is_code(words: list[str], i: int) -> bool:
    """Whether argument ``i`` is code a program of the command runs: the argument after ``-c`` of a shell or
    python (``-e`` of perl, ruby, node), or anything after ssh."""
    programs = [Path(w).name.rstrip("0123456789.") for w in words[:i]]
    if any(p in REMOTE_SHELLS for p in programs):
        return True
    flag = words[i - 1] if i else ""
    if not flag.startswith("-") or flag.startswith("--"):
        return False
    return any((letter := CODE_FLAGS.get(p)) is not None and letter in flag[1:] for p in programs)


def resolve_program(cmd: list[str], cwd: Path) -> list[str]:
    """``cmd`` with its program made absolute: a relative path against ``cwd``, a bare name from PATH.

    Raises:
        LaunchError: the program does not exist or cannot be run.
    """
    if not cmd:
        raise LaunchError("trainer.command: the command is empty")
    program = cmd[0]
    if "/" not in program:
        found = shutil.which(program)
        if found is None:
            raise LaunchError(f"trainer.command: cannot run it: {program!r} is not on PATH")
        return [found, *cmd[1:]]
    path = Path(os.path.expanduser(program))
    path = path if path.is_absolute() else cwd / path
    if not path.is_file():
        raise LaunchError(f"trainer.command: cannot run it: {path} does not exist")
    if not os.access(path, os.X_OK):
        raise LaunchError(f"trainer.command: cannot run it: {path} is not executable (chmod +x, or put its "
                          "interpreter first, e.g. {python} or bash)")
    return [str(path), *cmd[1:]]
