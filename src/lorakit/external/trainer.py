"""The description of an external trainer (sd-scripts, LLaMA-Factory, any command): one schema for a trainer
file given to ``lorakit run`` and for a queue workspace's ``[trainer]`` section.

```toml
command = "accelerate launch {sd_scripts}/sdxl_train_network.py --config_file {config}"
config = "sdxl-lora.toml"            # the trainer's own config, in its own format (.toml, .yaml, .json)
name = "{dataset}-{variant}-v{version}s{steps}"
steps_key = "max_train_steps"
oom_overlays = ["outofmemory.toml"]  # tried in order when the trainer runs out of memory
copy_files = ["sample-prompts.txt"]
[repos]
sd_scripts = "~/sd-scripts"
lycoris = "~/LyCORIS"
```
"""

from __future__ import annotations

import difflib
import os
import shlex
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lorakit.config.load import read_config_file
from lorakit.config.problems import problem_list
from lorakit.config.schema import Section
from lorakit.errors import ConfigError
from lorakit.external.render import read_template
from lorakit.runs.catalog import MODEL_PATTERNS

PLACEHOLDERS = ("dataset", "output_dir", "output_name", "python", "config", "run")


class TrainerKind(str, Enum):
    LORAKIT = "lorakit"  # lorakit's own trainer, from the workspace's training config
    COMMAND = "command"  # an external trainer's command line (sd-scripts, LLaMA-Factory, a script)


class TrainerSection(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)  # values stay plain text

    kind: TrainerKind = Field(
        TrainerKind.LORAKIT.value, description="In a queue workspace: lorakit train, or an external command (a trainer "
        "file is always a command).")
    command: str | None = Field(
        None, description="The command line; {config}, {dataset}, {output_dir}, {output_name}, {python}, {run} and "
        "each name in `repos` are filled in, e.g. 'accelerate launch {sd_scripts}/sdxl_train_network.py "
        "--config_file {config}'. A relative program path is relative to `cwd`.",
    )
    config: str | None = Field(
        None, description="The trainer's config template (.toml, .yaml/.yml or .json), rendered into the run folder "
        "in the same format with its placeholders filled.")
    cwd: str | None = Field(None, description="Where the command runs (default: the folder of the file that "
                            "defines the trainer).")
    oom_overlay: str | None = Field(
        None, description="Merged into the config for a retry when the trainer runs out of memory (the first rung "
        "of oom_overlays).")
    oom_overlays: list[str] = Field(
        default_factory=list, description="Overlays tried in order, each on top of the last, while the trainer "
        "keeps running out of memory.")
    oom_patterns: list[str] = Field(
        default_factory=list, description="More words in the trainer's output that mean it ran out of memory.")
    repos: dict[str, str] = Field(
        default_factory=dict, description="{name: folder} of the trainer's code (git checkouts: commit, branch, "
        "dirty flag recorded); usable as {name} in the command.")
    packages: list[str] = Field(
        default_factory=list, description="More pip distributions whose versions the trainer's interpreter "
        "reports into the manifest (torch, transformers, peft, diffusers, accelerate, bitsandbytes, xformers and "
        "the known trainers always are).")
    python: str | None = Field(
        None, description="The trainer's Python, for its package versions (default: found from the command: "
        "{python}, a python program, or a console script's #! line).")
    copy_files: list[str] = Field(
        default_factory=list, description="Files copied into the run with their sha256 (sample prompts, the "
        "training script, a captions file).")
    outputs: list[str] = Field(
        default_factory=lambda: list(MODEL_PATTERNS), min_length=1,
        description="File patterns (at any depth of the run folder) that a trained model matches; a run that "
        "leaves none has failed.",
    )
    steps_key: str | None = Field(
        None, description="Dotted key of the rendered config holding the step count, for {steps} in the name "
        "(e.g. max_train_steps).")
    name: str | None = Field(
        None, description="lorakit run: the run folder's name; {dataset}, {variant} (the overlays' stems), {steps}, "
        "{date} and {version} (the next free number; without it -vNNN is appended).")
    runs_dir: str = Field("runs", description="lorakit run: where run folders are made (relative to the "
                          "working directory, as lorakit train's output.dir).")

    @model_validator(mode="after")
    def _command_needs_a_command(self) -> TrainerSection:
        if self.kind == TrainerKind.COMMAND and not self.command:
            raise ValueError("trainer.kind = command needs trainer.command")
        return self

    @property
    def oom_ladder(self) -> list[str]:
        """The out-of-memory overlays, in the order they are tried."""
        return ([self.oom_overlay] if self.oom_overlay else []) + list(self.oom_overlays)


PATH_KEYS = ("config", "cwd", "oom_overlay", "python")
PATH_LIST_KEYS = ("oom_overlays", "copy_files")


def absolute_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """A trainer mapping with its relative paths made absolute against ``base``, and ``cwd`` defaulting to it."""

    def absolute(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        expanded = os.path.expanduser(value)
        return os.path.normpath(base / expanded) if not os.path.isabs(expanded) else expanded

    out = dict(raw)
    for key in PATH_KEYS:
        if key in out and not (key == "python" and "/" not in str(out[key])):  # "python3": looked up on PATH
            out[key] = absolute(out[key])
    for key in PATH_LIST_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [absolute(v) for v in out[key]]
    if isinstance(out.get("repos"), dict):
        out["repos"] = {k: absolute(v) for k, v in out["repos"].items()}
    out.setdefault("cwd", str(base))
    return out


def load_trainer_file(path: str | Path) -> TrainerSection:
    """A trainer file (YAML or TOML): a ``command`` trainer, relative paths against its folder.

    Raises:
        ConfigError: the file is missing or invalid, every problem named by key.
    """
    path = Path(path)
    raw = read_config_file(path)
    raw.setdefault("kind", "command")
    if raw["kind"] != "command":
        raise ConfigError(f"{path}: kind: a trainer file describes a command trainer (got {raw['kind']!r})")
    try:
        return TrainerSection.model_validate(absolute_paths(raw, path.parent.resolve()))
    except ValidationError as e:
        raise ConfigError(validation_message(f"invalid trainer file {path}", e)) from None


def command_trainer(argv: Sequence[str], repos: Sequence[str] = (), copies: Sequence[str] = ()) -> TrainerSection:
    """A trainer for a command line as it stands (``lorakit run --name N -- COMMAND...``), run here.

    Raises:
        ConfigError: a ``--repo`` that is not NAME=PATH.
    """
    pairs = [r.partition("=") for r in repos]
    if bad := [r for r, (_, sep, path) in zip(repos, pairs, strict=True) if not sep or not path]:
        raise ConfigError(f"--repo needs NAME=PATH (got {bad[0]!r})")
    return TrainerSection(kind="command", command=shlex.join(argv), cwd=str(Path.cwd()),
                          repos={k: str(Path(v).expanduser().resolve()) for k, _, v in pairs},
                          copy_files=[str(Path(c).resolve()) for c in copies])


def validation_message(header: str, error: ValidationError, model: type[BaseModel] = TrainerSection) -> str:
    """Every problem of a workspace or trainer file, one a line (one alone on the header's line), with a guess
    for an unknown key among the names of the same section."""
    problems = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "<top level>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            guess = difflib.get_close_matches(loc[-1], list(_section_of(model, loc[:-1]).model_fields), n=1)
            msg = "unknown key" + (f", did you mean {guess[0]!r}?" if guess else "")
        problems.append(msg if key == "<top level>" else f"{key}: {msg}")
    return problem_list(header, problems)


def _section_of(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    for part in path:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def check_trainer_files(trainer: TrainerSection, key: str = "trainer") -> None:
    """Every file and folder the trainer names exists (and every config parses).

    Raises:
        ConfigError: the first one missing or unreadable, by its key.
    """
    for name, file in [("config", trainer.config), *((f"oom_overlays[{i}]", f) for i, f in
                                                      enumerate(trainer.oom_ladder))]:
        if file is not None:
            if not Path(file).is_file():
                raise ConfigError(f"{key}.{name}: file not found: {file}")
            read_template(Path(file))
    for i, file in enumerate(trainer.copy_files):
        if not Path(file).is_file():
            raise ConfigError(f"{key}.copy_files[{i}]: file not found: {file}")
    if trainer.cwd is not None and not Path(trainer.cwd).is_dir():
        raise ConfigError(f"{key}.cwd: no such folder: {trainer.cwd}")
    for name, folder in trainer.repos.items():
        if not Path(folder).is_dir():
            raise ConfigError(f"{key}.repos.{name}: no such folder: {folder}")
