"""LLaMA-Factory's flat training config (``examples/train_lora/*.yaml``) as a nested lorakit config.

Where LLaMA-Factory's default differs from lorakit's, the import writes LLaMA-Factory's value, so
the run is the one the file describes: ``lora_alpha`` is twice the rank, ``max_samples`` caps each
dataset (``data.max_samples_per_file``), the Hugging Face trainer's learning rate, epochs, batch and
schedule, gradient checkpointing on, 2048-token rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorakit.config.peers.keys import copied
from lorakit.config.peers.translation import Translation, relative

SIMPLE = copied("llamafactory")  # the keys copied as they are, from the one table (peers/keys.py)
DROPPED = {
    "do_train": "lorakit train always trains",
    "trust_remote_code": "lorakit loads architectures transformers ships; no remote code runs",
    "preprocessing_num_workers": "data is prepared in the training process",
    "dataloader_num_workers": "batches are built in the training process",
    "overwrite_cache": "lorakit keeps no dataset cache",
    "overwrite_output_dir": "lorakit never overwrites: each run gets a new versioned folder",
    "save_only_model": "lorakit saves the adapter; train.resumable adds resume state",
    "plot_loss": "every run writes training_loss.png",
    "ddp_timeout": "distributed runs start through lorakit launch",
    "per_device_eval_batch_size": "evaluation uses train.micro_batch_size",
    "dataset_dir": "used to find dataset_info.json",
    "flash_attn": "lorakit picks the attention implementation itself",
    "bf16": "model.dtype auto picks bfloat16 on a GPU (float32 on a CPU)",
    "fp16": "model.dtype auto picks bfloat16 or float16 on a GPU (float32 on a CPU)",
    "optim": "lorakit trains with AdamW",
    "use_unsloth": "lorakit runs its own fused LoRA path, not unsloth's",
}
# What the Hugging Face trainer and LLaMA-Factory use when the file says nothing, where lorakit differs.
DEFAULTS = {
    "lora.r": (8, "LLaMA-Factory's lora_rank default"),
    "data.max_length": (2048, "LLaMA-Factory's cutoff_len default"),
    "train.lr": (5e-5, "the Hugging Face trainer's learning_rate default"),
    "train.epochs": (3.0, "the Hugging Face trainer's num_train_epochs default"),
    "train.micro_batch_size": (8, "the Hugging Face trainer's per_device_train_batch_size default"),
    "train.grad_accum": (1, "the Hugging Face trainer's gradient_accumulation_steps default"),
    "train.scheduler": ("linear", "the Hugging Face trainer's lr_scheduler_type default"),
    "train.warmup_ratio": (0.0, "the Hugging Face trainer's warmup_ratio default"),
    "train.log_every": (500, "the Hugging Face trainer's logging_steps default"),
}


def translate(raw: dict[str, Any], source: Path, out_dir: Path, dataset_dir: str | None = None) -> Translation:
    """The lorakit config for a LLaMA-Factory file, and a line for each of its keys."""
    t = Translation("llamafactory")
    handled = t.simple(raw, SIMPLE) | t.dropped_all(raw, DROPPED)
    handled |= _method(t, raw) | _data(t, raw, source, out_dir, dataset_dir) | _output(t, raw)
    handled |= _training(t, raw) | t.common(raw, "lr_scheduler_type")
    handled |= t.cadence(raw, float(raw.get("num_train_epochs", DEFAULTS["train.epochs"][0])))
    t.leftovers(raw, handled | t.selection(raw))
    rank = t.get("lora.r") or DEFAULTS["lora.r"][0]
    t.default("lora.alpha", 2 * rank, "LLaMA-Factory's lora_alpha default: twice the rank")
    for dotted, (value, why) in DEFAULTS.items():
        t.default(dotted, value, why)
    return t


def _method(t: Translation, raw: dict[str, Any]) -> set[str]:
    stage, kind = raw.get("stage", "sft"), raw.get("finetuning_type", "lora")
    if stage == "dpo":
        t.set("train.method", "dpo", "stage")
    elif stage != "sft":
        t.none("stage", f"lorakit trains supervised fine-tuning and DPO, not {stage}")
    elif "stage" in raw:
        t.drop("stage", "lorakit trains supervised fine-tuning by default")
    if kind != "lora":
        t.none("finetuning_type", f"lorakit trains LoRA adapters only, not {kind}")
    elif "finetuning_type" in raw:
        t.drop("finetuning_type", "lorakit trains LoRA adapters")
    target = raw.get("lora_target")
    if target is not None:
        names = [n.strip() for n in str(target).split(",") if n.strip()]
        t.set("lora.target_modules", "all-linear" if names == ["all"] else names, "lora_target")
    bits = raw.get("quantization_bit")
    if bits == 4:
        t.set("model.quantization", "nf4", "quantization_bit")
    elif bits is not None:
        t.none("quantization_bit", f"{bits}-bit: lorakit quantises the base to 4-bit NF4 only")
    if raw.get("pure_bf16"):
        t.set("model.dtype", "bfloat16", "pure_bf16")
    if "disable_gradient_checkpointing" in raw:
        t.set("train.gradient_checkpointing", not raw["disable_gradient_checkpointing"],
              "disable_gradient_checkpointing")
    t.default("train.gradient_checkpointing", True, "LLaMA-Factory checkpoints activations unless told not to")
    if "template" in raw:
        _template(t, str(raw["template"]))
    return {"stage", "finetuning_type", "lora_target", "quantization_bit", "pure_bf16",
            "disable_gradient_checkpointing", "template"} | _preference(t, raw)


def _preference(t: Translation, raw: dict[str, Any]) -> set[str]:
    """LLaMA-Factory's DPO keys (pref_beta, pref_loss, dpo_label_smoothing, pref_ftx)."""
    if "pref_beta" in raw:
        t.set("dpo.beta", float(raw["pref_beta"]), "pref_beta")
    loss = raw.get("pref_loss")
    if loss in ("sigmoid", "ipo", "hinge"):
        t.set("dpo.loss", loss, "pref_loss")
    elif loss is not None:
        t.none("pref_loss", f"{loss}: lorakit's DPO losses are sigmoid, ipo and hinge")
    if raw.get("dpo_label_smoothing"):
        t.set("dpo.label_smoothing", float(raw["dpo_label_smoothing"]), "dpo_label_smoothing")
    if raw.get("pref_ftx"):
        t.set("dpo.sft_weight", float(raw["pref_ftx"]), "pref_ftx")
    return {"pref_beta", "pref_loss", "dpo_label_smoothing", "pref_ftx"}


def _data(t: Translation, raw: dict[str, Any], source: Path, out_dir: Path, dataset_dir: str | None) -> set[str]:
    registry = _find_registry(dataset_dir or raw.get("dataset_dir") or "data", source)
    for key, dotted in (("dataset", "data.train"), ("eval_dataset", "data.eval")):
        if raw.get(key):
            names = ",".join(n.strip() for n in str(raw[key]).split(",") if n.strip())
            found = "" if registry.is_file() else f"; {registry} does not exist yet: give --dataset-dir"
            t.set(dotted, [f"{relative(registry, out_dir)}#{names}"], key, f"datasets of {registry.name}{found}")
    return {"dataset", "eval_dataset"}


def _find_registry(dataset_dir: str, source: Path) -> Path:
    """dataset_info.json: LLaMA-Factory looks in dataset_dir under its working directory; try there, then
    beside the config."""
    candidates = [Path(dataset_dir), source.parent / dataset_dir, source.parent, source.parent.parent / "data"]
    for folder in candidates:
        if (folder / "dataset_info.json").is_file():
            return folder / "dataset_info.json"
    return Path(dataset_dir) / "dataset_info.json"


def _output(t: Translation, raw: dict[str, Any]) -> set[str]:
    report = raw.get("report_to")
    wanted = [r for r in ([report] if isinstance(report, str) else report or []) if r != "none"]
    kept = [r for r in wanted if r in ("tensorboard", "mlflow")]
    if kept:
        t.set("tracking.report_to", kept, "report_to")
    if set(wanted) - set(kept):
        t.none("report_to", f"{', '.join(sorted(set(wanted) - set(kept)))}: lorakit reports to tensorboard and mlflow")
    elif "report_to" in raw and not kept:
        t.drop("report_to", "none: lorakit still logs to its run folder")
    if raw.get("resume_from_checkpoint"):
        t.none("resume_from_checkpoint", "resume a lorakit run with: lorakit train --resume RUN_FOLDER")
    elif "resume_from_checkpoint" in raw:
        t.drop("resume_from_checkpoint", "not set")
    return {"report_to", "resume_from_checkpoint"}


def _training(t: Translation, raw: dict[str, Any]) -> set[str]:
    if raw.get("train_on_prompt"):
        t.none("train_on_prompt", "lorakit trains the answers only (plain text rows are trained whole)")
    return {"train_on_prompt"} | t.distributed(raw)


# LLaMA-Factory templates lorakit renders itself (a base model's tokenizer often ships no template).
TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "chatml": "chatml", "chatml_de": "chatml"}


def _template(t: Translation, name: str) -> None:
    """A named template is never dropped: lorakit's own copy where it has one, else the tokenizer's own, which
    fails in one line for a tokenizer without a template instead of training silently with ``plain``."""
    if name in TEMPLATES:
        t.set("data.template", TEMPLATES[name], "template", f"lorakit's {TEMPLATES[name]} template")
    else:
        t.set("data.template", "tokenizer", "template",
              f"LLaMA-Factory's {name!r} is its copy of the model's own template; a tokenizer without one is "
              "refused rather than trained with plain")
