"""The ``train`` section of the run configuration: the loop, its evaluations, checkpoints and memory settings."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from lorakit.config.section import Section

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
    warmup_steps: int | None = Field(
        None, ge=0, description="Steps spent warming up, instead of warmup_ratio (as the Hugging Face trainer, "
        "LLaMA-Factory and axolotl read warmup_steps).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the adapter weights.")
    max_grad_norm: float = Field(1.0, ge=0, description="Clip the gradient norm to this; 0 = no clipping.")
    neftune_noise_alpha: float | None = Field(
        None, gt=0, description="NEFTune: uniform noise of alpha / sqrt(length x hidden size) on the input "
        "embeddings of each trained example (supervised fine-tuning; the Hugging Face trainer's key, which "
        "LLaMA-Factory and axolotl pass on; 5 is the paper's usual value). Evaluation sees no noise.")
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
    evals_per_epoch: int | None = Field(
        None, gt=0, description="Instead of eval_every: this many evaluations spread evenly over each epoch "
        "(axolotl's evals_per_epoch): eval_every becomes the steps of an epoch divided by it, rounded up.")
    save_every: int = Field(
        0, ge=0, description="Save a checkpoint every this many steps; 0 = no intermediate checkpoints."
    )
    saves_per_epoch: int | None = Field(
        None, gt=0, description="Instead of save_every: this many checkpoints spread evenly over each epoch "
        "(axolotl's saves_per_epoch).")
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
    def _noise_for_supervised_steps(self) -> TrainSection:
        if self.neftune_noise_alpha and self.method == "dpo":
            raise ValueError("train.neftune_noise_alpha applies to supervised fine-tuning; unset it for "
                             "train.method: dpo")
        return self

    @model_validator(mode="after")
    def _one_cadence(self) -> TrainSection:
        for every, per_epoch in (("eval_every", "evals_per_epoch"), ("save_every", "saves_per_epoch")):
            if getattr(self, every) and getattr(self, per_epoch):
                raise ValueError(f"train.{every} and train.{per_epoch} are both set; use one of them")
        return self

    @model_validator(mode="after")
    def _plan_needs_budget(self) -> TrainSection:
        if self.oom.auto_plan and self.memory_budget is None:
            raise ValueError("train.oom.auto_plan needs train.memory_budget (e.g. 8GiB)")
        metric = self.selection_metric.removeprefix("eval_")
        chosen_by = "train.early_stopping.metric" if self.early_stopping else "train.best_metric"
        if metric in PREFERENCE_METRICS:
            if self.method != "dpo":
                raise ValueError(f"{chosen_by}: {metric} is measured on preference pairs: set train.method: dpo, "
                                 f"or choose one of {', '.join(self.eval_metrics)}")
            metric = "loss"  # computed with the preference loss
        if (self.early_stopping or self.keeps != "last") and metric not in self.eval_metrics:
            raise ValueError(f"{chosen_by}: {metric} is not computed: add it to train.eval_metrics (now "
                             f"{', '.join(self.eval_metrics)}) or choose one of those")
        return self
