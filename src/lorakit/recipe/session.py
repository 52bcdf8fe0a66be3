"""Everything one training process holds while it trains, built in the order a run needs it.

The order matters for the user: every cheap check first, then the data (seconds), then the
model (a GGUF conversion takes a minute), so a mistake costs as little time as possible.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorakit.config.load import LoadedConfig, flatten_keys
from lorakit.config.memory import MemorySettings
from lorakit.config.schema import RunConfig
from lorakit.data.dataset import Datasets
from lorakit.model.resolve import ResolvedModel
from lorakit.recipe.checks import before_loading
from lorakit.recipe.disk_room import check_room, run_writes
from lorakit.runs.folder import RunFolder
from lorakit.train.callbacks import Callback
from lorakit.train.host import tune_host
from lorakit.train.plan import Step, plan_steps, recut_steps, with_epoch_cadence

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from peft import PeftModel

    from lorakit.data.tokenize import Example
    from lorakit.train.loss import SupervisedLoss

log = logging.getLogger(__name__)


@dataclass
class Session:
    run: RunFolder
    cfg: RunConfig  # as this session starts: auto-planned, or with the memory settings a resumed run reached
    loaded: LoadedConfig
    resolved: ResolvedModel
    accelerator: Accelerator
    model: PeftModel  # the adapter on its base model, unwrapped
    trainable: SupervisedLoss  # the loss module around it, as the accelerator prepared it
    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch.optim.lr_scheduler.LRScheduler
    tokenizer: Any  # a transformers tokenizer
    datasets: Datasets
    steps: list[Step]
    callbacks: list[Callback]
    overlaid: tuple[RunConfig, str] | None  # the config with train.oom.overlay applied, and what it changed
    first_change: str  # the first attempt's "change" (as configured, or what auto_plan did)

    @property
    def run_dir(self) -> Path:
        return self.run.path


@dataclass(frozen=True)
class TokenizedData:
    """The base model's files (converted once where need be), its tokenizer, and the data tokenized with it."""
    resolved: ResolvedModel
    tokenizer: Any
    datasets: Datasets


def prepare_data(cfg: RunConfig) -> TokenizedData:
    """Find the model, check ``lora.target_modules`` against its architecture and tokenize the data as the run
    will: what needs the model's files but not its weights, so ``run_training`` and ``lorakit train --nproc``
    call it before the run folder exists (a typo in a module name, a row the chat template cannot render).

    Raises:
        ModelError, DataError: as ``resolve_model``, ``check_target_modules``, ``load_tokenizer`` and
            ``build_datasets`` do.
    """
    from lorakit.data.dataset import build_datasets
    from lorakit.model.adapters import check_target_modules_of
    from lorakit.model.load import load_tokenizer
    from lorakit.model.resolve import resolve_model

    resolved = resolve_model(cfg.model.name_or_path, cfg.model.revision)
    check_target_modules_of(resolved.path, cfg.lora, cfg.model.revision)
    tokenizer = load_tokenizer(resolved, cfg.model.revision)
    return TokenizedData(resolved, tokenizer, build_datasets(cfg.data, tokenizer, cfg.train.method))


def open_session(loaded: LoadedConfig, run: RunFolder, extra_callbacks: list[Any],
                 state: dict[str, Any] | None, data: TokenizedData | None = None) -> Session:
    """Check, read the data (unless ``data`` has it), load the model and wire the callbacks, for a new run or
    (``state``) a resumed one."""
    from lorakit.train.optim import build_optimizer, build_scheduler

    cfg = loaded.config
    overlaid = before_loading(cfg)  # cheap checks before minutes of model conversion
    tune_host()
    accelerator = _accelerator(cfg)
    data = data or prepare_data(cfg)
    resolved, tokenizer, datasets = data.resolved, data.tokenizer, data.datasets
    cfg, first_change = _starting_config(cfg, resolved, run, accelerator, datasets.train, state)
    run.update(base_model=resolved.identity, base_model_path=resolved.path, template=datasets.template_name,
               data_formats={**datasets.stats["train"].formats, **datasets.stats["eval"].formats},
               data_stats={k: v.summary() for k, v in datasets.stats.items()},
               prompt_shape=datasets.prompt_shape.as_dict() if datasets.prompt_shape else None)
    log.info("data: %d training and %d validation %s (%s template)", len(datasets.train), len(datasets.eval),
             "pairs" if cfg.train.method == "dpo" else "examples", datasets.template_name)
    planned = cfg  # the steps are cut as configured, then as the out-of-memory ladder of a resumed run cut them
    if state is not None:
        cfg = _continue_with(cfg, MemorySettings.from_dict(state["settings"]))
    model = _adapted_model(resolved, cfg, accelerator.device.type)
    planned_steps = plan_steps(datasets.train, planned.train, planned.data, accelerator.num_processes)
    if accelerator.is_main_process:  # before the first step (and DPO's reference pass), not after the last
        check_room(run.path, run_writes(model, with_epoch_cadence(cfg.train, planned_steps), len(planned_steps),
                                        state["steps_done"] if state else 0, Path(resolved.path)))
    if cfg.train.method == "dpo":  # the reference is the model as it is now, before any step
        from lorakit.recipe.reference import with_reference

        trained = _items_in(planned_steps)
        datasets = with_reference(datasets, model, run, MemorySettings.of(cfg), tokenizer.pad_token_id,
                                  accelerator.device, accelerator.is_main_process,
                                  {i for i, pair in enumerate(datasets.train) if id(pair) in trained})
        planned_steps = plan_steps(datasets.train, planned.train, planned.data, accelerator.num_processes)
    steps = _recut_for(planned_steps, planned, cfg)
    cfg = cfg.model_copy(update={"train": with_epoch_cadence(cfg.train, steps)})
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, len(steps))
    trainable, optimizer = accelerator.prepare(_loss_module(model, cfg), optimizer)
    callbacks = _callbacks(loaded, cfg, run, resolved, model, extra_callbacks) if accelerator.is_main_process else []
    run.update(total_steps=len(steps))
    return Session(run, cfg, loaded, resolved, accelerator, model, trainable, optimizer, scheduler, tokenizer,
                   datasets, steps, callbacks, overlaid, first_change)


def _items_in(steps: list[Step]) -> set[int]:
    """The ids of the examples or pairs the steps hold (the planner places the dataset's own objects)."""
    return {id(item) for step in steps for rows in step.micro_batches for row in rows for item in row}


def _accelerator(cfg: RunConfig) -> Accelerator:
    import torch
    from accelerate import Accelerator

    from lorakit.model.load import pick_dtype
    from lorakit.train.distributed import distributed_options

    on_gpu = torch.cuda.is_available()
    # Base weights in bf16/fp16 on a GPU, the adapter in float32 (PEFT upcasts it), matmuls under autocast.
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(pick_dtype(cfg.model.dtype, "cuda"), "no")
    with warnings.catch_warnings():
        # accelerate warns that it set each CPU process's threads to cores / processes: tune_host set the same
        warnings.filterwarnings("ignore", message="OMP_NUM_THREADS/MKL_NUM_THREADS unset")
        accelerator = Accelerator(cpu=not on_gpu, mixed_precision=precision if on_gpu else "no",
                                  **distributed_options(cfg.launch.strategy))
    if accelerator.num_processes > 1:
        log.info("%d processes (%s, %s backend), %d micro-batches per process per step", accelerator.num_processes,
                 cfg.launch.strategy, accelerator.state.backend, cfg.train.grad_accum)
    return accelerator


def _starting_config(cfg: RunConfig, resolved: ResolvedModel, run: RunFolder, accelerator: Accelerator,
                     examples: list[Example], state: dict[str, Any] | None) -> tuple[RunConfig, str]:
    """The parent adapter checked (a new run), and the micro-batch train.oom.auto_plan starts from."""
    if state is not None:
        return cfg, "as configured"
    if cfg.lora.init_from:
        from lorakit.model.adapters import check_init_from

        run.update(parent=check_init_from(cfg.lora, resolved.identity,
                                          {cfg.model.name_or_path, resolved.path, resolved.identity["name"]}))
    if not cfg.train.oom.auto_plan:
        return cfg, "as configured"
    from lorakit.plan.auto import auto_plan
    from lorakit.plan.lengths import measure_lengths
    from lorakit.plan.report import PlanInputs

    lengths = measure_lengths(examples, cfg.train, cfg.data, accelerator.num_processes)
    planned, first_change, memory_plan = auto_plan(PlanInputs.of(cfg, lengths), cfg.train.memory_budget, resolved,
                                                   accelerator.device.type)
    run.update(memory_plan=memory_plan)
    return planned.applied_to(cfg), first_change


def _continue_with(cfg: RunConfig, settings: MemorySettings) -> RunConfig:
    """The config with the memory settings a resumed run had reached."""
    return cfg if settings == MemorySettings.of(cfg) else settings.applied_to(cfg)


def _recut_for(steps: list[Step], planned: RunConfig, reached: RunConfig) -> list[Step]:
    """Steps planned under ``planned``'s micro-batches, re-cut as the out-of-memory ladder had cut them.

    Steps are always planned from the starting micro-batch, so a resumed run trains the same examples
    in each step as the run it continues."""
    before, after = MemorySettings.of(planned), MemorySettings.of(reached)
    return steps if before == after else recut_steps(steps, before, after, planned.data.packing)


def _loss_module(model: PeftModel, cfg: RunConfig) -> SupervisedLoss:
    """What a step computes: the supervised loss, or the preference loss (train.method: dpo)."""
    from lorakit.train.loss import SupervisedLoss

    if cfg.train.method == "dpo":
        from lorakit.train.preference import PreferenceLoss

        return PreferenceLoss(model, cfg.dpo)
    return SupervisedLoss(model, cfg.train.neftune_noise_alpha)


def _adapted_model(resolved: ResolvedModel, cfg: RunConfig, device_type: str) -> PeftModel:
    import torch

    from lorakit.model.adapters import attach_adapter
    from lorakit.model.load import enable_checkpointing, load_base_model

    model = load_base_model(resolved, cfg.model, device_type)
    torch.manual_seed(cfg.train.seed)  # the adapter's initialisation, then dropout
    model = attach_adapter(model, cfg.lora)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.train.compile:
        from lorakit.model.compile import compile_mlps

        log.info("train.compile: compiled the MLP of %d decoder layers", compile_mlps(model))
    return model


def _callbacks(loaded: LoadedConfig, cfg: RunConfig, run: RunFolder, resolved: ResolvedModel, model: PeftModel,
               extra: list[Any]) -> list[Callback]:
    """trainer_log.jsonl, log lines, a progress bar, the trackers and checkpoints (main process only)."""
    from lorakit.train.callbacks import Checkpoints, LogLines, ProgressBar
    from lorakit.train.trackers import build_trackers

    params = {**flatten_keys(cfg.model_dump(mode="json")), "run": run.path.name,
              "config_sha256": loaded.sha256, "base_model": resolved.identity["name"]}
    trackers, tracker_record = build_trackers(cfg.tracking, cfg.output.dir, run.path, params, run.data.get("trackers"))
    if tracker_record:
        run.update(trackers=tracker_record)
    callbacks: list[Callback] = [run.trainer_log.callback(cfg.train.log_every),
                                 LogLines(cfg.train.log_every), ProgressBar(), *trackers, *extra]
    if cfg.train.save_every:
        callbacks.append(Checkpoints(run.path, model, cfg.train.save_every, cfg.train.save_total_limit))
    return callbacks
