"""run_training: config in, tracked run folder out. The one place that wires the layers together."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.config.load import LoadedConfig, apply_oom_overlay
from lorakit.errors import ConfigError, DataError, LorakitError
from lorakit.model.resolve import sha256_file
from lorakit.runs.artifacts import copy_tracked_files, plot_loss, write_results
from lorakit.runs.card import render_card
from lorakit.runs.manifest import Manifest
from lorakit.runs.naming import allocate_run_dir
from lorakit.runs.provenance import code_state, environment, hardware, package_versions
from lorakit.train.host import tune_host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    run_dir: Path
    status: str  # completed | interrupted
    metrics: dict[str, Any]


def start_run(loaded: LoadedConfig, command_line: Sequence[str]) -> tuple[Path, Manifest]:
    """Create the run folder with its config files and a first manifest."""
    cfg = loaded.config
    missing = [p for p in cfg.tracking.copy_files if not Path(p).is_file()]
    if missing:  # before the run folder exists: a typo leaves nothing behind
        raise ConfigError(f"tracking.copy_files: file not found: {', '.join(missing)}")
    run_dir = allocate_run_dir(Path(cfg.output.dir), loaded.run_name)
    (run_dir / "config.resolved.yaml").write_text(loaded.to_yaml(), encoding="utf-8")
    (run_dir / "config.sources.txt").write_text("\n".join(loaded.sources) + "\n", encoding="utf-8")
    data_files = [*cfg.data.train, *cfg.data.eval]
    manifest = Manifest.create(
        run_dir,
        name=run_dir.name,
        command_line=list(command_line),
        config=cfg.model_dump(mode="json"),
        config_sha256=loaded.sha256,
        config_files={str(f): sha256_file(f) for f in loaded.files},
        overrides=list(loaded.overrides),
        data_files={str(f): sha256_file(Path(f)) for f in data_files if Path(f).is_file()},
        versions=package_versions(),
        hardware=hardware(),
        code=code_state(cfg.tracking.repos),
        environment=environment(),
        copied_files={source: {"copy": str(copy.relative_to(run_dir)), "sha256": sha256_file(copy)}
                      for source, copy in copy_tracked_files(cfg.tracking.copy_files, run_dir).items()},
    )
    return run_dir, manifest


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
    try:
        return _train(loaded, run_dir, manifest, callbacks)
    except KeyboardInterrupt:
        manifest.set_status("interrupted", "stopped before training began")
        raise
    except LorakitError as e:
        manifest.set_status("failed", str(e))
        raise
    except Exception as e:
        manifest.set_status("failed", f"{type(e).__name__}: {e}")
        raise


def _train(loaded: LoadedConfig, run_dir: Path, manifest: Manifest, extra_callbacks: Sequence[Any]) -> TrainOutcome:
    import torch
    from accelerate import Accelerator

    from lorakit.data.dataset import build_datasets
    from lorakit.model.adapters import attach_adapter
    from lorakit.model.load import check_quantization, enable_checkpointing, load_base_model, load_tokenizer, pick_dtype
    from lorakit.model.resolve import resolve_model
    from lorakit.train.callbacks import Checkpoints, JsonlMetrics, LogLines, ProgressBar
    from lorakit.train.loop import plan_steps
    from lorakit.train.optim import build_optimizer, build_scheduler

    cfg = loaded.config
    # Fail on the cheap checks before minutes of model conversion, not after.
    check_quantization(cfg.model)
    for path in [*cfg.data.train, *cfg.data.eval]:
        if not Path(path).is_file():
            raise DataError(f"data file not found: {path}")
    overlaid = apply_oom_overlay(cfg)  # a broken out-of-memory overlay fails now, not at the first OOM
    tune_host()
    on_gpu = torch.cuda.is_available()
    # Base weights in bf16/fp16 on a GPU, the adapter in float32 (PEFT upcasts it), matmuls under autocast.
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(pick_dtype(cfg.model.dtype, "cuda"), "no")
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision=precision if on_gpu else "no")
    resolved = resolve_model(cfg.model.name_or_path, cfg.model.revision)
    first_change = "as configured"
    if cfg.train.oom.auto_plan:
        cfg, first_change = _auto_plan(cfg, resolved, accelerator.device.type, manifest)
    tokenizer = load_tokenizer(resolved, cfg.model.revision)
    datasets = build_datasets(cfg.data, tokenizer)
    manifest.update(base_model=resolved.identity, base_model_path=resolved.path, template=datasets.template_name,
                    data_formats={**datasets.stats["train"].formats, **datasets.stats["eval"].formats},
                    data_stats={k: v.summary() for k, v in datasets.stats.items()})
    log.info("data: %d training and %d validation examples (%s template)", len(datasets.train),
             len(datasets.eval), datasets.template_name)

    model = load_base_model(resolved, cfg.model, accelerator.device.type)
    torch.manual_seed(cfg.train.seed)  # the adapter's initialisation and dropout
    model = attach_adapter(model, cfg.lora)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.train.compile:
        from lorakit.model.compile import compile_mlps

        log.info("train.compile: compiled the MLP of %d decoder layers", compile_mlps(model))
    optimizer = build_optimizer(model, cfg.train)
    steps = plan_steps(datasets.train, cfg.train, cfg.data)
    scheduler = build_scheduler(optimizer, cfg.train, len(steps))
    model, optimizer = accelerator.prepare(model, optimizer)

    callbacks = []
    if accelerator.is_main_process:
        callbacks = [JsonlMetrics(run_dir / "trainer_log.jsonl", cfg.train.log_every),
                     LogLines(cfg.train.log_every), ProgressBar(), *extra_callbacks]
        if cfg.train.save_every:
            callbacks.append(Checkpoints(run_dir, accelerator.unwrap_model(model), cfg.train.save_every,
                                         cfg.train.save_total_limit))
    manifest.update(total_steps=len(steps))
    manifest.set_status("running")
    result = _run_with_retries(model, optimizer, scheduler, steps, cfg, datasets.eval, tokenizer.pad_token_id,
                               accelerator, callbacks, manifest, overlaid, first_change)

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
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(run_dir)
        tokenizer.save_pretrained(run_dir)
        metrics = write_results(run_dir, train_metrics, eval_metrics)
        plot_loss(run_dir / "training_loss.png", result.history, result.eval_history)
        manifest.update(metrics=metrics)
        manifest.set_status(result.status, "Ctrl+C" if result.status == "interrupted" else None)
        (run_dir / "README.md").write_text(render_card(run_dir, manifest.data), encoding="utf-8")
    return TrainOutcome(run_dir, result.status, {**train_metrics, **eval_metrics})


def _run_with_retries(model: Any, optimizer: Any, scheduler: Any, steps: list, cfg: Any, eval_examples: list,
                      pad_id: int, accelerator: Any, callbacks: list, manifest: Manifest,
                      overlaid: tuple[Any, str] | None, first_change: str = "as configured") -> Any:
    """run_loop, stepping down the out-of-memory ladder and resuming after the last completed step."""
    from lorakit.errors import TrainingError
    from lorakit.model.load import enable_checkpointing
    from lorakit.train.loop import peak_memory_gib, run_loop
    from lorakit.train.oom import Ladder, MemorySettings, StepOutOfMemory, give_up_message

    train = cfg.train
    settings = MemorySettings(train.micro_batch_size, train.grad_accum, train.gradient_checkpointing,
                              train.loss_chunk_tokens, cfg.data.max_length)
    ladder = Ladder(list(train.oom.ladder), train.oom.allow_shorter, packing=cfg.data.packing)
    if overlaid is not None:
        o = overlaid[0]
        ladder.overlay = (MemorySettings(o.train.micro_batch_size, o.train.grad_accum, o.train.gradient_checkpointing,
                                         o.train.loss_chunk_tokens, o.data.max_length), overlaid[1])
    attempts = [{"attempt": 1, "change": first_change, "settings": settings.describe()}]
    result = None
    while True:
        try:
            result = run_loop(model, optimizer, scheduler, steps, train, eval_examples, pad_id, accelerator,
                              callbacks, resume=result)
        except StepOutOfMemory as oom:
            result = oom.result
            attempts[-1].update(step_reached=result.steps_done, peak_memory_gib=peak_memory_gib(accelerator.device),
                                error=str(oom))
            change = ladder.step_down(steps[result.steps_done :], settings)
            if change is None:
                manifest.update(attempts=attempts)
                raise TrainingError(give_up_message(oom.step, ladder.tried, ladder.allow_shorter)) from None
            remaining, settings, what = change
            steps = [*steps[: result.steps_done], *remaining]
            if settings.gradient_checkpointing and not train.gradient_checkpointing:
                enable_checkpointing(model)
            train = train.model_copy(update={"micro_batch_size": settings.micro_batch_size,
                                             "grad_accum": settings.grad_accum,
                                             "gradient_checkpointing": settings.gradient_checkpointing,
                                             "loss_chunk_tokens": settings.loss_chunk_tokens})
            attempts.append({"attempt": len(attempts) + 1, "change": what, "settings": settings.describe(),
                             "resumed_after_step": result.steps_done})
            log.warning("%s; attempt %d: %s, resuming after step %d", oom, len(attempts), what, result.steps_done)
            manifest.update(attempts=attempts)
            continue
        attempts[-1].update(step_reached=result.steps_done, peak_memory_gib=peak_memory_gib(accelerator.device))
        manifest.update(attempts=attempts)
        return result


def _auto_plan(cfg: Any, resolved: Any, device_type: str, manifest: Manifest) -> tuple[Any, str]:
    """train.oom.auto_plan: start from the micro-batch the planner says fits train.memory_budget."""
    from lorakit.config.schema import parse_memory_size
    from lorakit.plan.estimate import GiB
    from lorakit.plan.facts import read_model_config
    from lorakit.plan.report import build_plan, starting_point

    budget = parse_memory_size(cfg.train.memory_budget)
    plan = build_plan(cfg, device_type, budget, read_model_config(resolved, cfg.model.revision))
    start = starting_point(plan)
    train = cfg.train
    changes = []
    if start.micro_batch_size != train.micro_batch_size:
        changes.append(f"micro_batch_size {train.micro_batch_size} -> {start.micro_batch_size}, "
                       f"grad_accum {train.grad_accum} -> {start.grad_accum}")
    if start.gradient_checkpointing and not train.gradient_checkpointing:
        changes.append("gradient checkpointing on")
    what = (f"planned for train.memory_budget {cfg.train.memory_budget}: {'; '.join(changes) or 'no change'} "
            f"(estimate {start.estimate.total / GiB:.2f} GiB, as configured {plan.estimate.total / GiB:.2f} GiB)")
    log.info("train.oom.auto_plan: %s", what)
    manifest.update(memory_plan={"budget_gib": round(budget / GiB, 3),
                                 "configured_estimate_gib": round(plan.estimate.total / GiB, 3),
                                 "planned_estimate_gib": round(start.estimate.total / GiB, 3),
                                 "micro_batch_size": start.micro_batch_size, "grad_accum": start.grad_accum,
                                 "gradient_checkpointing": start.gradient_checkpointing,
                                 "parts_gib": {p.name: round(p.bytes / GiB, 3) for p in start.estimate.parts}})
    planned = train.model_copy(update={"micro_batch_size": start.micro_batch_size, "grad_accum": start.grad_accum,
                                       "gradient_checkpointing": start.gradient_checkpointing})
    return cfg.model_copy(update={"train": planned}), what
