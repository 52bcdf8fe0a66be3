"""One tracked run of an external trainer: ``lorakit run``, and every command job of the queue.

The flow reads top to bottom: check and render everything that can fail before a run folder
exists; make the folder and its manifest (provenance as the trainer's own interpreter sees it);
run the command, stepping down the out-of-memory overlays while the trainer runs out of memory;
then record what it produced (files, LoRA metadata, curve, samples) and write the model card.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from lorakit.config.schema import is_folder_name
from lorakit.disk import NEARLY_FULL, free_bytes, full_disk_line, size_text
from lorakit.errors import ConfigError
from lorakit.external.facts import find_python, interpreter_facts
from lorakit.external.oom import out_of_memory
from lorakit.external.outputs import (
    describe_outputs,
    gather_curve,
    latest_samples,
    models_metadata,
    trainer_results,
)
from lorakit.external.render import (
    FORMATS,
    dotted,
    dump_config,
    render_command,
    render_config,
    rendered_name,
    resolve_program,
    value_environment,
)
from lorakit.external.trainer import TrainerSection, check_trainer_files
from lorakit.model.resolve import sha256_file
from lorakit.outcome import Kind, Outcome
from lorakit.proc import Child, Finished, ForwardSignals, run_logged
from lorakit.redaction import redact, redact_text, remember
from lorakit.runs.artifacts import copy_tracked_files
from lorakit.runs.catalog import model_files
from lorakit.runs.fingerprint import fingerprint_dataset
from lorakit.runs.folder import RunFolder
from lorakit.runs.naming import safe_name
from lorakit.runs.provenance import code_state, environment, hardware

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerJob:
    """What to run: a trainer, on a dataset, with overlays and ``--set`` values, into a runs folder."""

    trainer: TrainerSection
    runs_dir: Path
    dataset: Path | None = None
    overlays: tuple[Path, ...] = ()
    overrides: tuple[str, ...] = ()
    name: str | None = None  # replaces the trainer's name pattern (the queue's output name, --name)
    dataset_name: str | None = None  # the dataset's name as found, when its folder was named for it (the queue)
    strict_command: bool = True  # False: a command line given as it stands (unknown braces left alone)
    command_line: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv))


@dataclass(frozen=True)
class TrainerOutcome:
    run_dir: Path
    outcome: Outcome  # completed, stopped (a signal), out-of-memory or failed
    returncode: int

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def reason(self) -> str | None:
        """Why it did not complete (None when it did)."""
        if self.outcome.kind is Kind.STOPPED:
            return f"stopped by {self.outcome.reason}"
        return self.outcome.reason or None


@dataclass(frozen=True)
class Plan:
    """Everything decided before the run folder exists."""

    name_pattern: str  # with {version} still in it, or a plain name (then -vNNN follows)
    values: dict[str, str]  # placeholders, without the run folder's own
    attempts: list[tuple[str, list[Path]]]  # (what changed, out-of-memory rungs taken), tried in order
    steps: int | None


def plan_run(job: TrainerJob) -> Plan:
    """Render the config and the command once with stand-in folders: every mistake surfaces here.

    Raises:
        ConfigError: a file missing or unreadable, a placeholder with no value, --dataset not a folder.
        LaunchError: the program cannot be run.
    """
    trainer = job.trainer
    check_trainer_files(trainer)
    if job.dataset is not None and not job.dataset.is_dir():
        raise ConfigError(f"--dataset: not a folder: {job.dataset}")
    values = {"dataset": str(job.dataset.resolve()) if job.dataset else "", "python": trainer.python or sys.executable,
              **trainer.repos}
    attempts: list[tuple[str, list[Path]]] = [("as configured", [])]
    for overlay in trainer.oom_ladder:  # each rung on top of the ones before it
        attempts.append((f"out-of-memory overlay {Path(overlay).name}", [*attempts[-1][1], Path(overlay)]))
    steps = None
    trial = {**values, "output_dir": str(job.runs_dir.resolve() / "run"), "output_name": "run", "run": "run"}
    if trainer.config:
        first, *_ = [render_config(Path(trainer.config), job.overlays, job.overrides, trial, rungs)
                     for _, rungs in attempts]
        steps = dotted(first, trainer.steps_key) if trainer.steps_key else None
        if trainer.steps_key and not isinstance(steps, int):
            raise ConfigError(f"trainer.steps_key: {trainer.steps_key} is not a whole number in the rendered config "
                              f"(got {steps!r})")
    elif job.overlays or job.overrides:
        raise ConfigError("--add and --set change the trainer's config, and this trainer has none (trainer.config)")
    resolve_program(render_command(trainer.command or "", {**trial, "config": "config"}, job.strict_command),
                    Path(trainer.cwd or "."))
    variant = "-".join(p.stem for p in job.overlays)
    pattern = job.name or trainer.name or ("{dataset}" if job.dataset else "run")
    fields = {"dataset": safe_name(job.dataset.name) if job.dataset else "", "variant": variant,
              "steps": str(steps) if steps is not None else "", "date": date.today().isoformat()}
    for key, text in fields.items():
        pattern = pattern.replace("{" + key + "}", text)
    pattern = "-".join(part for part in pattern.split("-") if part) or "run"  # an empty {variant} leaves no "--"
    if not is_folder_name(pattern.replace("{version}", "1")) or "{" in pattern.replace("{version}", ""):
        raise ConfigError(f"trainer.name: {pattern!r} is not a plain folder name; placeholders: {{dataset}}, "
                          "{variant}, {steps}, {date}, {version}")
    return Plan(pattern, values, attempts, steps)


def render_plan(job: TrainerJob) -> str:
    """What ``lorakit run --dry-run`` prints: the run folder, the rendered config, the command, the OOM rungs.

    Raises:
        ConfigError, LaunchError: as ``plan_run``.
    """
    plan = plan_run(job)
    trainer = job.trainer
    folder = plan.name_pattern if "{version}" in plan.name_pattern else f"{plan.name_pattern}-vNNN"
    values = {**plan.values, "output_dir": str(job.runs_dir.resolve() / folder), "run": folder,
              "output_name": folder if "{version}" in plan.name_pattern else plan.name_pattern}
    lines = [f"# run folder: {job.runs_dir / folder}"]
    config_path = ""
    if trainer.config:
        template = Path(trainer.config)
        config = render_config(template, job.overlays, job.overrides, values)
        lines += [f"# config ({template.name}, rendered):", dump_config(config, FORMATS[template.suffix.lower()])]
        config_path = str(job.runs_dir.resolve() / folder / rendered_name(template))
    cmd = render_command(trainer.command or "", {**values, "config": config_path}, job.strict_command)
    lines += [f"# command (in {trainer.cwd}):", shlex.join(cmd)]
    lines += [f"# then, on out of memory: {change}" for change, _ in plan.attempts[1:]]
    return "\n".join(line.rstrip("\n") for line in lines)


def run_trainer(job: TrainerJob, child: Child | None = None, clean_empty: bool = False) -> TrainerOutcome:
    """Run the trainer once as a tracked run (see the module docstring).

    Args:
        clean_empty: after a failure, remove the run folder if the trainer wrote nothing into it
            (``lorakit run``; ``LORAKIT_NO_CLEAN=1`` keeps it).

    Raises:
        ConfigError, LaunchError: found before the run folder exists (``plan_run``).
    """
    plan = plan_run(job)
    trainer = job.trainer
    run = _create_run(job, plan)
    run_dir = run.path
    # output_name: the run's name (the folder's, less a -vNNN the folder alone carries)
    output_name = run_dir.name if "{version}" in plan.name_pattern else plan.name_pattern
    values = {**plan.values, "output_dir": str(run_dir.resolve()), "output_name": output_name, "run": run_dir.name}
    child = child or Child()
    try:
        with ForwardSignals(child) as signals:
            done, oom = _attempts(job, run, plan, values, child, signals)
    except BaseException as e:
        run.fail(f"{type(e).__name__}: {e}")
        raise
    _record_outputs(run, trainer, plan.steps)
    outcome = _verdict(run, done, oom, signals.reason, tuple(trainer.outputs))
    if not (outcome.status == "failed" and clean_empty and _removed_if_empty(run)):
        run.end(outcome)
    return TrainerOutcome(run_dir, outcome, done.returncode)


def _full_disk(run: RunFolder, done: Finished) -> str | None:
    """Why the trainer failed when a disk was full: its own words, or the run folder's disk left (nearly) full.
    A queue stops on it, since the next dataset would find the disk as full."""
    if said := full_disk_line(done.tail):
        return f"a disk it writes to is full: {said[:300]}; free space there"
    folder = run.path.parent.absolute()
    if (free := free_bytes(folder)) < NEARLY_FULL:
        return f"the disk of {folder} is full ({size_text(free)} free): {done.error_line()[:300]}; free space there"
    return None


def _verdict(run: RunFolder, done: Finished, oom: str | None, stopped_by: str | None,
             outputs: tuple[str, ...]) -> Outcome:
    """How the run ended, and why it did not complete."""
    program = Path(run.data["command"][0]).name
    if stopped_by is not None:
        return Outcome(Kind.STOPPED, stopped_by)
    if done.returncode != 0 and oom:
        attempts = len(run.data["attempts"])
        return Outcome(Kind.OUT_OF_MEMORY, f"out of memory after {attempts} attempt(s): {done.error_line()[:300]}",
                       {"attempts": attempts})
    if done.returncode != 0 and (full := _full_disk(run, done)):
        return Outcome(Kind.DISK_FULL, f"{program} exited with {done.returncode}: {full}",
                       {"returncode": done.returncode})
    if done.returncode != 0:
        return Outcome(Kind.FAILED, f"{program} exited with {done.returncode}: {done.error_line()[:300]}",
                       {"returncode": done.returncode})
    if not model_files(run.path, outputs):
        return Outcome(Kind.FAILED, f"{program} exited with 0 but produced no model file "
                                    f"(looked for {', '.join(outputs)})")
    return Outcome(Kind.COMPLETED)


def _create_run(job: TrainerJob, plan: Plan) -> RunFolder:
    """The run folder, with what the trainer's own interpreter says it runs on, the dataset and the copies."""
    trainer = job.trainer
    first_cmd = resolve_program(render_command(trainer.command or "", {**plan.values, "config": "config",
                                                                      "output_dir": "", "output_name": "",
                                                                      "run": ""}, job.strict_command),
                                Path(trainer.cwd or "."))
    python = find_python(first_cmd, trainer.python)
    interpreter = interpreter_facts(python, trainer.packages)
    templates = [Path(f) for f in ([trainer.config] if trainer.config else []) + trainer.oom_ladder]
    import lorakit

    run = RunFolder.create(
        job.runs_dir, plan.name_pattern, trainer="command", command_template=trainer.command,
        working_directory=trainer.cwd, command_line=list(job.command_line),
        config_files={str(f): sha256_file(f) for f in [*templates, *job.overlays]},
        overrides=list(job.overrides), total_steps=plan.steps, trainer_python=interpreter,
        versions={"lorakit": lorakit.__version__, **(interpreter.get("packages") or {})},
        hardware=hardware(), code=code_state(trainer.repos), environment=environment(), parent=None)
    dataset = fingerprint_dataset(job.dataset, run.path / "dataset_files.tsv") if job.dataset else None
    if dataset is not None and job.dataset_name is not None:
        dataset["name"] = job.dataset_name
    run.update(dataset=dataset, data_files={dataset["path"]: dataset["sha256"]} if dataset else {},
               copied_files={source: {"copy": str(copy.relative_to(run.path)), "sha256": sha256_file(copy)}
                             for source, copy in copy_tracked_files(trainer.copy_files, run.path).items()})
    return run


def _attempts(job: TrainerJob, run: RunFolder, plan: Plan, values: dict[str, str], child: Child,
              signals: ForwardSignals) -> tuple[Finished, str | None]:
    """Run the command as configured, then with each out-of-memory overlay while it runs out of memory.

    Returns:
        How the last attempt finished, and what said it ran out of memory (None if it did not).
    """
    trainer, run_dir = job.trainer, run.path
    attempts: list[dict[str, Any]] = []
    run.start()
    with tempfile.TemporaryDirectory(prefix="lorakit-config-") as private:
        for change, rungs in plan.attempts:
            config_arg = _write_config(job, run, values, rungs, Path(private))
            cmd = resolve_program(render_command(trainer.command or "", {**values, "config": config_arg},
                                                 job.strict_command), Path(trainer.cwd or "."))
            run.update(command=[redact_text(c) for c in cmd])
            log.info("%s: %s (%s)", run_dir.name, redact_text(shlex.join(cmd)), change)
            done = run_logged(cmd, run_dir / "trainer.log", cwd=Path(trainer.cwd or "."), child=child,
                              own_group=True, env=value_environment({**values, "config": config_arg}))
            if not _next_attempt(run, attempts, change, done, trainer.oom_patterns, signals, len(plan.attempts)):
                break
    return done, out_of_memory(done, trainer.oom_patterns)


def _write_config(job: TrainerJob, run: RunFolder, values: dict[str, str], rungs: list[Path], private: Path) -> str:
    """The trainer's config for one attempt, rendered into the run folder with its secrets (``hf_token: ...``, a
    password in a URL) redacted; the trainer then reads the whole one from a private folder outside the run
    (removed when the run ends), so no copy that travels with the run holds a secret. The path to pass as
    {config} ("" without a config)."""
    if not job.trainer.config:
        return ""
    template = Path(job.trainer.config)
    fmt = FORMATS[template.suffix.lower()]
    config = render_config(template, job.overlays, job.overrides, values, rungs)
    remember(config)  # a trainer printing its token in plain words has it redacted from trainer.log too
    whole, kept = dump_config(config, fmt), dump_config(redact(config), fmt)
    config_path = run.path / rendered_name(template)
    config_path.write_text(kept, encoding="utf-8")
    run.update(config=config, config_sha256=sha256_file(config_path))
    if whole == kept:
        return str(config_path.resolve())  # the command runs in trainer.cwd
    secret = private / rendered_name(template)
    secret.write_text(whole, encoding="utf-8")  # the folder is the current user's alone (mode 700)
    return str(secret)


def _next_attempt(run: RunFolder, attempts: list[dict[str, Any]], change: str, done: Finished,
                  oom_patterns: list[str], signals: ForwardSignals, planned: int) -> bool:
    """Record how an attempt ended; whether to try the next out-of-memory overlay."""
    oom = out_of_memory(done, oom_patterns)
    attempts.append({"attempt": len(attempts) + 1, "change": change, "returncode": done.returncode,
                     **({"error": f"out of memory ({oom})"} if oom else {}),
                     **({"error_line": done.error_line()[:300]} if done.returncode else {})})
    run.update(attempts=attempts)
    if done.returncode == 0 or not oom or signals.reason is not None:
        return False
    left = planned - len(attempts)
    log.warning("%s: the trainer ran out of memory (%s); %s", run.path.name, oom,
                "retrying with the next out-of-memory overlay" if left else "no out-of-memory overlay left")
    return bool(left)



def _record_outputs(run: RunFolder, trainer: TrainerSection, steps: int | None) -> None:
    run_dir = run.path
    if (run_dir / "README.md").exists():  # the trainer's own card (LLaMA-Factory writes one): ours goes beside it
        run.update(card="CARD.md")
    models = model_files(run_dir, tuple(trainer.outputs))
    outputs = describe_outputs(run_dir)
    history = gather_curve(run, steps)
    metrics = trainer_results(run_dir)  # what this attempt's trainer wrote; nothing kept from an earlier one
    if history:  # the trainer's own train_loss (the Trainer's: the mean over the run) wins over the curve's
        losses = [h["loss"] for h in history]
        metrics.setdefault("train_loss", sum(losses) / len(losses))
        metrics.update(train_loss_last=losses[-1], train_steps=history[-1]["step"])
    run.update(outputs=outputs, models=[p.relative_to(run_dir).as_posix() for p in models],
                    model_metadata=models_metadata(run_dir, models), samples=latest_samples(run_dir),
                    metrics=metrics)


def _removed_if_empty(run: RunFolder) -> bool:
    """Remove a failed run's folder when the trainer wrote nothing into it (as the sd-scripts users' helper
    does), unless LORAKIT_NO_CLEAN=1. Its output was shown as it ran, and the reason is printed."""
    import os

    from lorakit.runs.catalog import NO_CLEAN_ENV

    run_dir = run.path
    if run.data.get("outputs") or os.environ.get(NO_CLEAN_ENV, "") not in ("", "0"):
        return False
    log.info("%s: the trainer wrote nothing; removing the run folder (%s=1 keeps it)", run_dir, NO_CLEAN_ENV)
    shutil.rmtree(run_dir)
    return True
