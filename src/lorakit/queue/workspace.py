"""The queue's workspace file: where data comes from and goes, how each dataset is trained, what is cleaned.

```toml
work_dir = "work"            # datasets: one folder each (downloaded, unpacked or put there by hand)
output_dir = "outputs"       # run folders, one subfolder per dataset
config = "base.yaml"         # the training config every dataset starts from
overlays = []                # applied to every dataset; their stems suffix the output name
suffix = "v1"                # output name: <folder>-<suffix>[-<overlay>...]

[remote]
training = "gdrive:training" # rclone path of the dataset folders and archives
output = "gdrive:output"     # rclone path results are uploaded to
config = "rclone.conf"
flags = []                   # for the transfers only; checks and deletions take only the connection flags
skip_trash = false           # lorakit's own deletions skip the trash (drive, b2, onedrive, ...)

[cleanup]                    # after a result is uploaded and verified (never with --test);
local_data = true            # each defaults to true with remote.output, and is off (and may not be
local_output = true          # turned on) without it: then the local run is the only copy of the result
remote_training = true
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from lorakit.config.load import read_config_file
from lorakit.config.schema import RaySection, Section
from lorakit.errors import ConfigError
from lorakit.external.render import read_template
from lorakit.external.trainer import (
    TrainerKind,
    TrainerSection,
    absolute_paths,
    check_trainer_files,
    load_trainer_file,
    validation_message,
)
from lorakit.launch.executor import Executor
from lorakit.queue.keep import LORAKIT_MODEL
from lorakit.remote.paths import is_local


class RemoteSection(Section):
    training: str | None = Field(None, description="rclone path holding the datasets (folders and archives).")
    output: str | None = Field(None, description="rclone path the results are uploaded to.")
    config: str | None = Field(None, description="rclone config file (default: rclone's own).")
    skip_trash: bool = Field(
        False, description="lorakit's own deletions (the training files it removes once their result is verified) "
        "skip the remote's trash, where the backend has a flag for it (drive, b2, onedrive, jottacloud, mega). "
        "The trash itself is never emptied: it holds other people's deleted files too.")
    flags: list[str] = Field(
        default_factory=list, description="Extra flags for rclone's transfers (downloads and uploads). Checks, "
        "listings and deletions take only their connection-level ones (timeouts, retries, bandwidth, TLS; "
        "lorakit.remote.rclone.CONNECTION_FLAGS), so no flag can make a check pass.")

    @model_validator(mode="before")
    @classmethod
    def _no_trash_emptying(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "empty_trash_after_upload" in raw:
            raise ValueError("empty_trash_after_upload was removed: it ran rclone cleanup, which empties the whole "
                             "trash of the remote, other people's deleted files too; remote.skip_trash = true makes "
                             "lorakit's own deletions skip the trash instead")
        return raw


CLEANUP_KEYS = ("local_data", "local_output", "remote_training")


class CleanupSection(Section):
    """Unset keys default to true with ``remote.output`` and to false without it (see Workspace)."""

    local_data: bool = Field(True, description="Delete the downloaded dataset once its result is uploaded and "
                             "verified (never a folder put into work_dir by hand).")
    local_output: bool = Field(True, description="Delete the local run folder once it is uploaded and verified.")
    remote_training: bool = Field(True, description="Delete the dataset's remote files once its result is uploaded "
                                  "and verified.")

    @property
    def any(self) -> bool:
        return self.local_data or self.local_output or self.remote_training


class QueueSection(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)  # values stay plain text

    executor: Executor = Field(
        Executor.LOCAL.value,
        description="local: train each dataset here, one after another; slurm: submit each dataset as its own "
        "Slurm job (resources from the training config's launch.slurm) and upload each result as its job completes; "
        "ray: each dataset a Ray task (download, train, upload on one node; resources from [queue.ray]).",
    )
    poll_seconds: float = Field(30, gt=0, description="With executor slurm: seconds between looks at the jobs.")
    ray: RaySection = Field(default_factory=RaySection, description="With executor ray: the cluster, and what "
                            "each dataset's task reserves on a node.")
    new_content: Literal["train", "wait"] = Field(
        "train", description="A dataset trained before whose remote folder now holds other files (new or "
        "changed): train: train them as a new result (uploaded beside the first, as <name>-<suffix>-2...); "
        "wait: leave them, with one line each time the queue runs. They are never deleted untrained.")


class Workspace(Section):
    work_dir: str = Field(description="Local folder the datasets are downloaded and unpacked into.")
    output_dir: str = Field("outputs", description="Local folder for the run folders.")
    config: str | None = Field(None, description="Base lorakit training config (trainer.kind = lorakit).")
    overlays: list[str] = Field(default_factory=list, description="Overlays applied to every dataset.")
    suffix: str = Field("v1", description="Output names are <folder>-<suffix>[-<overlay stem>...].")
    remote: RemoteSection = Field(default_factory=RemoteSection)
    cleanup: CleanupSection = Field(default_factory=CleanupSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection, description="How each dataset is trained: "
                                    "lorakit, or an external command (inline, or the path of a trainer file).")
    queue: QueueSection = Field(default_factory=QueueSection)

    @model_validator(mode="before")
    @classmethod
    def _cleanup_needs_an_output(cls, raw: Any) -> Any:
        """Without remote.output the local run is the only copy of a result: clean-up defaults to off, and
        turning it on is an error rather than a loss."""
        if not isinstance(raw, dict) or not isinstance(raw.get("cleanup", {}), dict):
            return raw
        remote = raw.get("remote") if isinstance(raw.get("remote"), dict) else {}
        has_output = bool(remote.get("output"))
        cleanup = dict(raw.get("cleanup") or {})
        if not has_output and (on := [k for k in CLEANUP_KEYS if cleanup.get(k) is True]):
            raise ValueError(f"cleanup.{on[0]} = true needs remote.output: without an uploaded, verified result "
                             "the data and the run would be the only copies; set remote.output or remove it")
        for key in CLEANUP_KEYS:
            cleanup.setdefault(key, has_output)
        return {**raw, "cleanup": cleanup}

    @property
    def model_patterns(self) -> tuple[str, ...]:
        """What a trained model looks like in this workspace's run folders."""
        return LORAKIT_MODEL if self.trainer.kind == TrainerKind.LORAKIT else tuple(self.trainer.outputs)

    @model_validator(mode="after")
    def _lorakit_needs_config(self) -> Workspace:
        if self.trainer.kind == TrainerKind.LORAKIT and not self.config:
            raise ValueError("config (the base training config) is required with trainer.kind = lorakit")
        if self.queue.executor == Executor.SLURM and self.trainer.kind != TrainerKind.LORAKIT:
            raise ValueError("queue.executor = slurm submits lorakit training runs: it needs trainer.kind = lorakit")
        if self.queue.executor == Executor.RAY and not (self.remote.training and self.remote.output):
            raise ValueError("queue.executor = ray trains on other machines: it needs remote.training (where each "
                             "node downloads from) and remote.output (where each node uploads to)")
        return self


PATH_FIELDS = ("work_dir", "output_dir", "config")


def load_workspace(path: str | Path) -> Workspace:
    """Read and validate a workspace file; relative paths are relative to its folder.

    Raises:
        ConfigError: the file is missing or invalid, every problem named by key.
    """
    path = Path(path)
    raw = read_config_file(path)
    base = path.absolute().parent  # absolute: the state file records paths, and the next run may start elsewhere

    def absolute(value: str | None) -> str | None:
        return value if value is None else os.path.normpath(base / value)

    for key in PATH_FIELDS:
        if isinstance(raw.get(key), str):
            raw[key] = absolute(raw[key])
    if isinstance(raw.get("overlays"), list):
        raw["overlays"] = [absolute(v) for v in raw["overlays"]]
    remote = raw.get("remote")
    if isinstance(remote, dict):
        if isinstance(remote.get("config"), str):
            remote["config"] = absolute(remote["config"])
        for key in ("training", "output"):  # a local folder, as rclone reads it: relative to this file too
            if isinstance(remote.get(key), str) and is_local(remote[key]):
                remote[key] = absolute(remote[key])
    trainer = raw.get("trainer")
    if isinstance(trainer, str):  # a trainer file, as `lorakit run` takes it
        raw["trainer"] = load_trainer_file(base / trainer).model_dump()
    elif isinstance(trainer, dict):
        raw["trainer"] = absolute_paths(trainer, base.resolve())
    try:
        return Workspace.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(validation_message(f"invalid workspace {path}", e, Workspace)) from None


def check_workspace_files(ws: Workspace, extra_overlays: tuple[str, ...] = ()) -> None:
    """Every file the workspace names exists and parses: a mistake there stops the queue before it touches anything.

    Raises:
        ConfigError: the first file missing or unreadable, by its key.
    """
    files = [("config", ws.config), *(("overlays", o) for o in ws.overlays), *(("--add", o) for o in extra_overlays)]
    for key, file in files:
        if file is not None:
            if not Path(file).is_file():
                raise ConfigError(f"{key}: file not found: {file}")
            read_template(Path(file))  # lorakit configs, or an external trainer's overlays (TOML, YAML, JSON)
    if ws.remote.config is not None and not Path(ws.remote.config).is_file():
        raise ConfigError(f"remote.config: rclone config file not found: {ws.remote.config}")
    if ws.trainer.kind == TrainerKind.COMMAND:
        check_trainer_files(ws.trainer)
