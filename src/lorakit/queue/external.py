"""External trainers (kohya-ss sd-scripts and the like): render their TOML config, run, retry on OOM.

The config template and overlays are TOML; string values may hold {dataset}, {output_dir} and
{output_name}, filled per dataset. The run folder gets a manifest like a lorakit run's: the
rendered config and its hash, the command, the external repos' commits, versions, hardware and
each attempt.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorakit.config.load import merge_into, read_config_file
from lorakit.errors import QueueError
from lorakit.model.resolve import sha256_file
from lorakit.queue.jobs import data_files
from lorakit.queue.process import Child, run_logged
from lorakit.queue.workspace import Workspace
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


def run_external(ws: Workspace, dataset: Path, job_dir: Path, name: str, overlays: Sequence[str],
                 child: Child | None = None) -> tuple[Path, str | None]:
    """Train ``dataset`` with the workspace's external command.

    Returns:
        The run folder, and None on success or the reason it failed.
    """
    import tomli_w

    trainer = ws.trainer
    assert trainer.command and trainer.config
    run_dir = allocate_run_dir(job_dir, name)
    values = {"dataset": str(dataset.resolve()), "output_dir": str(run_dir.resolve()), "output_name": name,
              "python": sys.executable}
    layers = [Path(o) for o in overlays]
    files = [Path(trainer.config), *layers] + ([Path(trainer.oom_overlay)] if trainer.oom_overlay else [])
    manifest = Manifest.create(
        run_dir, name=run_dir.name, trainer="command", command_template=trainer.command,
        config_files={str(f): sha256_file(f) for f in files}, overrides=[],
        data_files={f: sha256_file(Path(f)) for f in data_files(dataset)},
        versions=package_versions(), hardware=hardware(), code=code_state(trainer.repos), environment=environment(),
        command_line=sys.argv, parent=None,
    )
    attempts: list[dict[str, Any]] = []
    plans = [("as configured", layers)]
    if trainer.oom_overlay:
        plans.append((f"out-of-memory overlay {Path(trainer.oom_overlay).name}", [*layers, Path(trainer.oom_overlay)]))
    manifest.set_status("running")
    for change, config_layers in plans:
        config = render_config(Path(trainer.config), config_layers, values)
        config_path = run_dir / "config.toml"
        config_path.write_text(tomli_w.dumps(config), encoding="utf-8")
        cmd = render_command(trainer.command, {**values, "config": str(config_path.resolve()), **trainer.repos})
        manifest.update(config=config, config_sha256=hashlib.sha256(config_path.read_bytes()).hexdigest(),
                        command=cmd)
        log.info("%s: %s (%s)", name, shlex.join(cmd), change)
        done = run_logged(cmd, run_dir / "trainer.log", cwd=run_dir, child=child)
        oom = done.returncode != 0 and any(m in line for line in done.tail for m in OOM_MARKERS)
        attempts.append({"attempt": len(attempts) + 1, "change": change, "returncode": done.returncode,
                         **({"error": "out of memory"} if oom else {})})
        manifest.update(attempts=attempts)
        if done.returncode == 0:
            manifest.set_status("completed")
            return run_dir, None
        if not oom:
            break
        log.warning("%s: the trainer ran out of memory; %s", name,
                    "retrying with the OOM overlay" if len(attempts) < len(plans) else "no OOM overlay left to try")
    reason = f"{Path(cmd[0]).name} exited with {done.returncode}: {done.error_line()[:300]}"
    if attempts[-1].get("error") == "out of memory":
        reason = f"out of memory after {len(attempts)} attempt(s): {done.error_line()[:300]}"
    manifest.set_status("failed", reason)
    return run_dir, reason
