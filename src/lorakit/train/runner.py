"""run_training and resume_training: config in, tracked run folder out. The one place that wires the layers together."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.config.load import LoadedConfig, apply_oom_overlay, flatten_keys
from lorakit.errors import DataError, LorakitError, RunError
from lorakit.runs.artifacts import plot_loss, write_results
from lorakit.runs.card import write_card
from lorakit.runs.manifest import Manifest
from lorakit.train.distributed import process_rank
from lorakit.train.host import tune_host
from lorakit.train.start import data_hashes, start_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    run_dir: Path
    status: str  # completed | interrupted
    metrics: dict[str, Any]


def run_training(loaded: LoadedConfig, command_line: Sequence[str] | None = None,
                 callbacks: Sequence[Any] = ()) -> TrainOutcome:
    """Train the adapter a config describes and write its run folder.

    Args:
        loaded: the validated, layered config.
        command_line: recorded in the manifest; defaults to this process's argv.
        callbacks: extra ``lorakit.train.callbacks.Callback`` objects (main process only).

    Returns:
        The run folder, how training ended, and the final metrics.

    Raises:
        LorakitError: a data, model or training problem; the run is marked failed with the reason.
    """
    run_dir, manifest = start_run(loaded, command_line if command_line is not None else sys.argv)
    log.info("run folder: %s (config sha256 %s)", run_dir, loaded.sha256[:12])
    return _marking_failures(manifest, lambda: _train(loaded, run_dir, manifest, callbacks))


def resume_training(run_dir: Path, command_line: Sequence[str] | None = None,
                    callbacks: Sequence[Any] = ()) -> TrainOutcome:
    """Continue an interrupted or failed run from its resume state, in its own folder.

    The config is the run's own (manifest.json), so the result is the one an uninterrupted
    run would have reached.

    Raises:
        RunError: the run completed already, has no resume state, or its data files changed.
    """
    from lorakit.train.resume import load_resume_state

    manifest = Manifest.load(run_dir, writable=process_rank() == 0)
    if manifest.data.get("status") == "completed":
        raise RunError(f"{run_dir.name} completed already; to train it further start a new run with "
                       f"lora.init_from: {run_dir}")
    state = load_resume_state(run_dir)
    loaded = recorded_config(manifest)
    cfg = loaded.config
    now = data_hashes([*cfg.data.train, *cfg.data.eval])
    for path, digest in manifest.data.get("data_files", {}).items():
        if now.get(path) != digest:
            change = "is missing" if path not in now else f"changed (sha256 {digest[:12]} -> {now[path][:12]})"
            raise RunError(f"{run_dir.name}: data file {path} {change} since the run started; "
                           "resuming would not reproduce it")
    resumes = [*manifest.data.get("resumes", []),
               {"from_step": state["steps_done"], "command_line": list(command_line or sys.argv)}]
    manifest.update(resumes=resumes)
    log.info("resuming %s after step %d", run_dir, state["steps_done"])
    return _marking_failures(manifest, lambda: _train(loaded, run_dir, manifest, callbacks, state))


def train_prepared(run_dir: Path, callbacks: Sequence[Any] = ()) -> TrainOutcome:
    """Train a run folder created earlier (by ``lorakit train --nproc`` or ``lorakit submit``) with
    its recorded config; in every process torchrun or srun started, only the main one writing.

    A run that already started continues from its resume state (``resume_training``).
    """
    manifest = Manifest.load(run_dir, writable=process_rank() == 0)
    if manifest.status not in ("created", "submitted"):
        return resume_training(run_dir, callbacks=callbacks)
    loaded = recorded_config(manifest)
    return _marking_failures(manifest, lambda: _train(loaded, run_dir, manifest, callbacks))


def recorded_config(manifest: Manifest) -> LoadedConfig:
    """A run's own config from its manifest, relative paths taken from where it was started."""
    from lorakit.config.load import load_recorded_config

    return load_recorded_config(manifest.data["config"], Path(manifest.data.get("working_directory", ".")),
                                manifest.path.parent.name, manifest.data.get("config_files", {}))


def _marking_failures(manifest: Manifest, train: Callable[[], TrainOutcome]) -> TrainOutcome:
    try:
        return train()
    except KeyboardInterrupt:
        manifest.set_status("interrupted", "stopped before training began")
        raise
    except LorakitError as e:
        manifest.set_status("failed", str(e))
        raise
    except Exception as e:
        manifest.set_status("failed", f"{type(e).__name__}: {e}")
        raise


@dataclass
class Session:
    """What one training process holds while it trains, for the retry loop and the resume state."""

    run_dir: Path
    model: Any  # the SupervisedLoss module as the accelerator prepared it (DDP- or FSDP-wrapped)
    optimizer: Any
    scheduler: Any
    accelerator: Any
    callbacks: list[Any]
    manifest: Manifest
    eval_examples: list
    pad_id: int


def _train(loaded: LoadedConfig, run_dir: Path, manifest: Manifest, extra_callbacks: Sequence[Any],
           state: dict[str, Any] | None = None) -> TrainOutcome:
    import torch
    from accelerate import Accelerator

    from lorakit.data.dataset import build_datasets
    from lorakit.model.adapters import attach_adapter, check_init_from
    from lorakit.model.load import check_quantization, enable_checkpointing, load_base_model, load_tokenizer, pick_dtype
    from lorakit.model.resolve import resolve_model
    from lorakit.train.callbacks import Checkpoints, JsonlMetrics, LogLines, ProgressBar
    from lorakit.train.distributed import adapter_state_dict, distributed_options
    from lorakit.train.loop import plan_steps
    from lorakit.train.loss import SupervisedLoss
    from lorakit.train.optim import build_optimizer, build_scheduler
    from lorakit.train.resume import restore, restored_result, restored_settings
    from lorakit.train.trackers import build_trackers, check_trackers

    cfg = loaded.config
    # Fail on the cheap checks before minutes of model conversion, not after.
    check_quantization(cfg.model)
    check_trackers(cfg)
    for path in [*cfg.data.train, *cfg.data.eval]:
        if not Path(path).is_file():
            raise DataError(f"data file not found: {path}")
    overlaid = apply_oom_overlay(cfg)  # a broken out-of-memory overlay fails now, not at the first OOM
    tune_host()
    on_gpu = torch.cuda.is_available()
    # Base weights in bf16/fp16 on a GPU, the adapter in float32 (PEFT upcasts it), matmuls under autocast.
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(pick_dtype(cfg.model.dtype, "cuda"), "no")
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision=precision if on_gpu else "no",
                              **distributed_options(cfg.launch.strategy))
    if accelerator.num_processes > 1:
        log.info("%d processes (%s, %s backend), %d micro-batches per process per step", accelerator.num_processes,
                 cfg.launch.strategy, accelerator.state.backend, cfg.train.grad_accum)
    resolved = resolve_model(cfg.model.name_or_path, cfg.model.revision)
    if cfg.lora.init_from and state is None:
        parent = check_init_from(cfg.lora, resolved.identity,
                                 {cfg.model.name_or_path, resolved.path, resolved.identity["name"]})
        manifest.update(parent=parent)
    first_change = "as configured"
    if cfg.train.oom.auto_plan and state is None:
        from lorakit.plan.auto import auto_plan

        cfg, first_change, memory_plan = auto_plan(cfg, resolved, accelerator.device.type)
        manifest.update(memory_plan=memory_plan)
    tokenizer = load_tokenizer(resolved, cfg.model.revision)
    datasets = build_datasets(cfg.data, tokenizer)
    manifest.update(base_model=resolved.identity, base_model_path=resolved.path, template=datasets.template_name,
                    data_formats={**datasets.stats["train"].formats, **datasets.stats["eval"].formats},
                    data_stats={k: v.summary() for k, v in datasets.stats.items()},
                    prompt_shape=datasets.prompt_shape.as_dict() if datasets.prompt_shape else None)
    log.info("data: %d training and %d validation examples (%s template)", len(datasets.train),
             len(datasets.eval), datasets.template_name)

    steps = plan_steps(datasets.train, cfg.train, cfg.data, accelerator.num_processes)
    if state is not None:
        steps, cfg = _continue_with(steps, cfg, restored_settings(state))

    model = load_base_model(resolved, cfg.model, accelerator.device.type)
    torch.manual_seed(cfg.train.seed)  # the adapter's initialisation and dropout
    model = attach_adapter(model, cfg.lora)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.train.compile:
        from lorakit.model.compile import compile_mlps

        log.info("train.compile: compiled the MLP of %d decoder layers", compile_mlps(model))
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, len(steps))
    trainable, optimizer = accelerator.prepare(SupervisedLoss(model), optimizer)

    callbacks = []
    if accelerator.is_main_process:
        params = {**flatten_keys(cfg.model_dump(mode="json")), "run": run_dir.name,
                  "config_sha256": loaded.sha256, "base_model": resolved.identity["name"]}
        trackers, tracker_record = build_trackers(cfg, run_dir, params, manifest.data.get("trackers"))
        if tracker_record:
            manifest.update(trackers=tracker_record)
        callbacks = [JsonlMetrics(run_dir / "trainer_log.jsonl", cfg.train.log_every),
                     LogLines(cfg.train.log_every), ProgressBar(), *trackers, *extra_callbacks]
        if cfg.train.save_every:
            callbacks.append(Checkpoints(run_dir, model, cfg.train.save_every,
                                         cfg.train.save_total_limit))
    session = Session(run_dir, trainable, optimizer, scheduler, accelerator, callbacks, manifest, datasets.eval,
                      tokenizer.pad_token_id)
    manifest.update(total_steps=len(steps))
    resumed = None
    if state is not None:
        restore(state, model, optimizer, scheduler)
        resumed = restored_result(state)
        _trim_log(run_dir / "trainer_log.jsonl", resumed.steps_done)
        for cb in callbacks:
            cb.on_train_begin(len(steps))
        manifest.set_status("running", f"resumed after step {resumed.steps_done}")
    else:
        manifest.set_status("running")
    result = _run_with_retries(session, steps, cfg, overlaid, first_change, resumed,
                               state["attempts"] if state else [])

    train_metrics = {"epoch": steps[result.steps_done - 1].epoch if result.steps_done else 0.0,
                     "train_loss": result.final_loss, "train_runtime": round(result.seconds, 2),
                     "train_steps": result.steps_done, "train_tokens": result.trained_tokens,
                     "train_supervised_tokens": result.supervised_tokens,
                     "train_computed_tokens": result.computed_tokens,
                     "train_tokens_per_second": round(result.tokens_per_second(result.seconds), 1),
                     "eval_runtime": round(result.eval_seconds, 2)}
    eval_metrics = {"eval_loss": result.final_eval_loss} if result.eval_history else {}
    if result.eval_history:
        eval_metrics["eval_loss_before_training"] = result.eval_history[0]["eval_loss"]
    adapter_state = adapter_state_dict(accelerator, trainable)  # every process takes part under FSDP
    if accelerator.is_main_process:
        # PEFT edits an existing README.md (a resumed run's card) and warns about its metadata; ours replaces it.
        (run_dir / "README.md").unlink(missing_ok=True)
        model.save_pretrained(run_dir, state_dict=adapter_state)
        tokenizer.save_pretrained(run_dir)
        metrics = write_results(run_dir, train_metrics, eval_metrics)
        plot_loss(run_dir / "training_loss.png", result.history, result.eval_history)
        manifest.update(metrics=metrics)
        manifest.set_status(result.status, result.stop_reason)
        if result.status == "completed":
            from lorakit.train.resume import STATE_FILE

            (run_dir / STATE_FILE).unlink(missing_ok=True)  # the final adapter supersedes it
        write_card(run_dir, manifest.data)
    return TrainOutcome(run_dir, result.status, {**train_metrics, **eval_metrics})


def _continue_with(steps: list, cfg: Any, settings: Any) -> tuple[list, Any]:
    """The planned steps and config under the memory settings a resumed run had reached."""
    from lorakit.train.oom import MemorySettings, recut_steps

    planned = MemorySettings.of(cfg)
    if settings == planned:
        return steps, cfg
    return recut_steps(steps, planned, settings, cfg.data.packing), settings.applied_to(cfg)


def _trim_log(path: Path, steps_done: int) -> None:
    """Drop trainer_log.jsonl lines of steps after the resume point: they will be logged again."""
    import json

    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("current_steps", 0) <= steps_done]
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def _run_with_retries(session: Session, steps: list, cfg: Any, overlaid: tuple[Any, str] | None,
                      first_change: str, resumed: Any, attempts: list[dict[str, Any]]) -> Any:
    """run_loop, stepping down the out-of-memory ladder and resuming after the last completed step."""
    from lorakit.errors import TrainingError
    from lorakit.model.load import enable_checkpointing
    from lorakit.train.distributed import is_sharded
    from lorakit.train.loop import peak_memory_gib, run_loop
    from lorakit.train.oom import Ladder, MemorySettings, StepOutOfMemory, give_up_message
    from lorakit.train.resume import save_resume_state
    from lorakit.train.stop import StopRequest

    accelerator = session.accelerator
    settings = MemorySettings.of(cfg)
    ladder = Ladder(list(cfg.train.oom.ladder), cfg.train.oom.allow_shorter, packing=cfg.data.packing)
    if overlaid is not None:
        ladder.overlay = (MemorySettings.of(overlaid[0]), overlaid[1])
    attempts = list(attempts)
    if resumed is not None and attempts:
        attempts[-1].setdefault("step_reached", resumed.steps_done)  # it stopped there
    change = first_change if resumed is None else f"resumed after step {resumed.steps_done}"
    attempts.append({"attempt": len(attempts) + 1, "change": change, "settings": settings.describe()})
    unwrapped = accelerator.unwrap_model(session.model).model

    def save_state(result: Any) -> None:
        if accelerator.is_main_process and not is_sharded(accelerator):  # FSDP: no resume state (see schema)
            save_resume_state(session.run_dir, unwrapped, session.optimizer, session.scheduler, result, settings,
                              attempts)

    result = resumed
    with StopRequest() as stop:
        while True:
            try:
                result = run_loop(session.model, session.optimizer, session.scheduler, steps, cfg.train,
                                  session.eval_examples, session.pad_id, accelerator, session.callbacks,
                                  resume=result, stop=stop, save_state=save_state,
                                  state_every=cfg.train.resume_every if cfg.train.resumable else 0)
            except StepOutOfMemory as oom:
                result = oom.result
                attempts[-1].update(step_reached=result.steps_done, peak_memory_gib=peak_memory_gib(accelerator.device),
                                    error=str(oom))
                change = ladder.step_down(steps[result.steps_done :], settings)
                if change is None:
                    session.manifest.update(attempts=attempts)
                    raise TrainingError(give_up_message(oom.step, ladder.tried, ladder.allow_shorter)) from None
                remaining, settings, what = change
                steps = [*steps[: result.steps_done], *remaining]
                if settings.gradient_checkpointing and not cfg.train.gradient_checkpointing:
                    enable_checkpointing(unwrapped)
                cfg = settings.applied_to(cfg)
                attempts.append({"attempt": len(attempts) + 1, "change": what, "settings": settings.describe(),
                                 "resumed_after_step": result.steps_done})
                log.warning("%s; attempt %d: %s, resuming after step %d", oom, len(attempts), what,
                            result.steps_done)
                session.manifest.update(attempts=attempts)
                continue
            attempts[-1].update(step_reached=result.steps_done,
                                peak_memory_gib=peak_memory_gib(accelerator.device))
            session.manifest.update(attempts=attempts)
            return result
