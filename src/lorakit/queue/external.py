"""External trainers (kohya-ss sd-scripts and the like): render their TOML config, run, retry on OOM.

The config template and overlays are TOML; string values may hold {dataset}, {output_dir} and
{output_name}, filled per dataset. The run folder gets a manifest like a lorakit run's: the
rendered config and its hash, the command, the external repos' commits, versions, hardware and
each attempt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorakit.config.load import merge_into, read_config_file
from lorakit.errors import QueueError
from lorakit.model.resolve import sha256_file
from lorakit.queue.jobs import data_files
from lorakit.queue.process import Child, run_logged
from lorakit.queue.workspace import TrainerSection, Workspace
from lorakit.runs.manifest import Manifest
from lorakit.runs.naming import allocate_run_dir
from lorakit.runs.provenance import code_state, environment, hardware, package_versions

log = logging.getLogger(__name__)

OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "out of memory")


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, str):
        for key, text in values.items():
            value = value.replace("{" + key + "}", text)
    return value


def render_config(template: Path, overlays: Sequence[Path], values: dict[str, str]) -> dict[str, Any]:
    """The template merged with each overlay in order, placeholders filled."""
    config = read_config_file(template)
    for overlay in overlays:
        merge_into(config, read_config_file(overlay))
    return _fill(config, values)


def render_command(template: str, values: dict[str, str]) -> list[str]:
    """The command template as an argument list; every filled-in value is one argument, whatever it holds.

    Raises:
        QueueError: a placeholder with no value.
    """
    quoted = {k: shlex.quote(v) for k, v in values.items()}
    try:
        return shlex.split(template.format_map(quoted))
    except KeyError as e:
        raise QueueError(f"trainer.command: unknown placeholder {{{e.args[0]}}}; known: "
                         f"{', '.join('{' + k + '}' for k in values)}") from None


def _null_key(value: Any, path: str = "") -> str | None:
    """The dotted key of the first null (None) in a rendered config; TOML has no null."""
    if value is None:
        return path or "<top level>"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := _null_key(item, f"{path}.{key}" if path else str(key))) is not None:
            return found
    return None


def render_toml(template: Path, layers: Sequence[Path], values: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The rendered config and its TOML text.

    Raises:
        QueueError: a value TOML cannot hold (a null), named by key and file.
    """
    import tomli_w

    config = render_config(template, layers, values)
    if (key := _null_key(config)) is not None:
        raise QueueError(f"trainer.config {template}: {key} is null, which TOML cannot hold; give it a value "
                         "or remove the key")
    try:
        return config, tomli_w.dumps(config)
    except TypeError as e:  # a value of a type TOML has no word for
        raise QueueError(f"trainer.config {template}: {e}") from None


def _program(cmd: list[str]) -> str | None:
    """Why the command cannot start (its program is missing or not executable), or None."""
    program = cmd[0] if cmd else ""
    if "/" not in program:
        return None if shutil.which(program) else f"{program!r} is not on PATH"
    path = Path(program)
    if not path.is_absolute():
        return (f"{program!r} is a relative path, and the command runs in the run folder; use an absolute path "
                "or a placeholder such as {python} or a trainer.repos name")
    if not path.is_file():
        return f"{program} does not exist"
    return None if os.access(path, os.X_OK) else f"{program} is not executable"


def check_command_trainer(ws: Workspace, overlays: Sequence[str]) -> None:
    """The command and config template work for a dataset at all: checked once, before the queue touches anything.

    Raises:
        QueueError: a placeholder with no value, a program that cannot run, a null in the template.
    """
    trainer = ws.trainer
    assert trainer.command and trainer.config
    sample = {"dataset": str(Path(ws.work_dir, "dataset").resolve()), "output_dir": str(Path(ws.output_dir).resolve()),
              "output_name": "dataset", "python": sys.executable}
    layers = [Path(o) for o in overlays]
    render_toml(Path(trainer.config), layers, sample)
    if trainer.oom_overlay:
        render_toml(Path(trainer.config), [*layers, Path(trainer.oom_overlay)], sample)
    cmd = render_command(trainer.command, {**sample, "config": "config.toml", **trainer.repos})
    if (why := _program(cmd)) is not None:
        raise QueueError(f"trainer.command: cannot run it: {why}")


def run_external(ws: Workspace, dataset: Path, job_dir: Path, name: str, overlays: Sequence[str],
                 child: Child | None = None) -> tuple[Path, str | None]:
    """Train ``dataset`` with the workspace's external command.

    The config and command are rendered and checked before the run folder is created, so a
    mistake in the template leaves nothing behind; once it exists, its manifest always ends
    completed, failed or interrupted.

    Returns:
        The run folder, and None on success or the reason it failed.

    Raises:
        QueueError: the config template or the command cannot work for any dataset.
    """
    trainer = ws.trainer
    assert trainer.command and trainer.config
    layers = [Path(o) for o in overlays]
    plans = [("as configured", layers)]
    if trainer.oom_overlay:
        plans.append((f"out-of-memory overlay {Path(trainer.oom_overlay).name}", [*layers, Path(trainer.oom_overlay)]))
    trial = {"dataset": str(dataset.resolve()), "output_dir": str(job_dir.resolve() / name), "output_name": name,
             "python": sys.executable}
    for _, config_layers in plans:
        render_toml(Path(trainer.config), config_layers, trial)
    trial_cmd = render_command(trainer.command, {**trial, "config": "config.toml", **trainer.repos})
    if (why := _program(trial_cmd)) is not None:
        raise QueueError(f"trainer.command: cannot run it: {why}")

    run_dir = allocate_run_dir(job_dir, name)
    values = {**trial, "output_dir": str(run_dir.resolve())}
    files = [Path(trainer.config), *layers] + ([Path(trainer.oom_overlay)] if trainer.oom_overlay else [])
    manifest = Manifest.create(
        run_dir, name=run_dir.name, trainer="command", command_template=trainer.command,
        config_files={str(f): sha256_file(f) for f in files},
        overrides=[], data_files={f: sha256_file(Path(f)) for f in data_files(dataset)},
        versions=package_versions(), hardware=hardware(), code=code_state(trainer.repos), environment=environment(),
        command_line=sys.argv, parent=None,
    )
    try:
        return run_dir, _attempts(manifest, trainer, plans, values, child)
    except KeyboardInterrupt:
        manifest.set_status("interrupted", "stopped by a signal")
        raise
    except Exception as e:
        manifest.set_status("failed", f"{type(e).__name__}: {e}")
        raise


def _attempts(manifest: Manifest, trainer: TrainerSection, plans: list[tuple[str, list[Path]]],
              values: dict[str, str], child: Child | None) -> str | None:
    """Run the command as configured, then with the OOM overlay while it runs out of memory; why it failed."""
    assert trainer.command and trainer.config
    run_dir, name = manifest.path.parent, values["output_name"]
    attempts: list[dict[str, Any]] = []
    manifest.set_status("running")
    for change, config_layers in plans:
        config, text = render_toml(Path(trainer.config), config_layers, values)
        config_path = run_dir / "config.toml"
        config_path.write_text(text, encoding="utf-8")
        cmd = render_command(trainer.command, {**values, "config": str(config_path.resolve()), **trainer.repos})
        manifest.update(config=config, config_sha256=hashlib.sha256(text.encode()).hexdigest(), command=cmd)
        log.info("%s: %s (%s)", name, shlex.join(cmd), change)
        done = run_logged(cmd, run_dir / "trainer.log", cwd=run_dir, child=child)
        oom = done.returncode != 0 and any(m in line for line in done.tail for m in OOM_MARKERS)
        attempts.append({"attempt": len(attempts) + 1, "change": change, "returncode": done.returncode,
                         **({"error": "out of memory"} if oom else {})})
        manifest.update(attempts=attempts)
        if done.returncode == 0:
            manifest.set_status("completed")
            return None
        if not oom:
            break
        log.warning("%s: the trainer ran out of memory; %s", name,
                    "retrying with the OOM overlay" if len(attempts) < len(plans) else "no OOM overlay left to try")
    reason = f"{Path(cmd[0]).name} exited with {done.returncode}: {done.error_line()[:300]}"
    if attempts[-1].get("error") == "out of memory":
        reason = f"out of memory after {len(attempts)} attempt(s): {done.error_line()[:300]}"
    manifest.set_status("failed", reason)
    return reason
