"""Configs from other trainers: recognise them, point at lorakit's keys, import them.

LLaMA-Factory and axolotl write one flat list of keys; lorakit's config is nested in sections.
``HINTS`` names, for the peer keys people carry over by hand, the lorakit key and how to write
the value; ``looks_like`` tells a whole flat peer config from a few stray keys, so ``lorakit
train`` can say "try: lorakit config import" instead of listing thirty unknown keys.
"""

from __future__ import annotations

from collections.abc import Iterable

# A peer's key -> (lorakit's key, how to write the value there; "" when it is the same).
HINTS: dict[str, tuple[str, str]] = {
    "model_name_or_path": ("model.name_or_path", ""),
    "base_model": ("model.name_or_path", ""),
    "lora_rank": ("lora.r", ""),
    "lora_r": ("lora.r", ""),
    "lora_alpha": ("lora.alpha", "LLaMA-Factory's default is twice the rank; lorakit's is 32"),
    "lora_dropout": ("lora.dropout", ""),
    "lora_target": ("lora.target_modules", "'all' is all-linear; else a list such as [q_proj, v_proj]"),
    "lora_target_modules": ("lora.target_modules", ""),
    "lora_target_linear": ("lora.target_modules", "true is all-linear"),
    "use_dora": ("lora.use_dora", ""),
    "use_rslora": ("lora.use_rslora", ""),
    "dataset": ("data.train", "a LLaMA-Factory dataset is path/dataset_info.json#name"),
    "datasets": ("data.train", "the local files of the datasets' path"),
    "eval_dataset": ("data.eval", "a LLaMA-Factory dataset is path/dataset_info.json#name"),
    "cutoff_len": ("data.max_length", ""),
    "sequence_len": ("data.max_length", ""),
    "max_seq_length": ("data.max_length", ""),
    "max_samples": ("data.max_samples_per_file", "LLaMA-Factory caps each dataset; data.max_samples caps the total"),
    "val_set_size": ("data.val_size", ""),
    "sample_packing": ("data.packing", ""),
    "template": ("data.template", "lorakit renders with the tokenizer's own chat template: auto"),
    "chat_template": ("data.template", "auto, tokenizer, chatml, gemma or plain"),
    "learning_rate": ("train.lr", ""),
    "num_train_epochs": ("train.epochs", ""),
    "num_epochs": ("train.epochs", ""),
    "per_device_train_batch_size": ("train.micro_batch_size", ""),
    "gradient_accumulation_steps": ("train.grad_accum", ""),
    "lr_scheduler_type": ("train.scheduler", "cosine, linear or constant"),
    "lr_scheduler": ("train.scheduler", "cosine, linear or constant"),
    "logging_steps": ("train.log_every", ""),
    "save_steps": ("train.save_every", ""),
    "eval_steps": ("train.eval_every", ""),
    "bf16": ("model.dtype", "auto picks bfloat16 on a GPU and float32 on a CPU"),
    "fp16": ("model.dtype", "auto picks bfloat16 (or float16) on a GPU and float32 on a CPU"),
    "quantization_bit": ("model.quantization", "4 is nf4"),
    "load_in_4bit": ("model.quantization", "true is nf4"),
    "report_to": ("tracking.report_to", "a list of tensorboard, mlflow; for none leave it out"),
    "output_dir": ("output.dir", "the folder that holds the versioned run folders"),
    "adapter_name_or_path": ("lora.init_from", ""),
}

LLAMAFACTORY_MARKERS = {"model_name_or_path", "stage", "finetuning_type", "lora_target", "dataset", "cutoff_len",
                        "do_train", "lora_rank", "template", "dataset_dir"}
AXOLOTL_MARKERS = {"base_model", "datasets", "adapter", "sequence_len", "lora_target_linear", "num_epochs",
                   "sample_packing", "micro_batch_size", "val_set_size", "lora_r"}


def looks_like(keys: Iterable[str]) -> str | None:
    """``llamafactory`` or ``axolotl`` when top-level keys are a flat config of that trainer, else None."""
    keys = set(keys)
    scores = {"llamafactory": len(keys & LLAMAFACTORY_MARKERS), "axolotl": len(keys & AXOLOTL_MARKERS)}
    best = max(scores, key=lambda name: scores[name])
    return best if scores[best] >= 3 else None


def hint(key: str) -> str | None:
    """``did you mean 'lora.r'?`` and how to write the value, for a key a peer trainer uses; or why lorakit
    needs no such key."""
    if key in HINTS:
        target, how = HINTS[key]
        return f"did you mean {target!r}?" + (f" ({how})" if how else "")
    from lorakit.config.peers import axolotl, llamafactory

    for name, module in (("LLaMA-Factory", llamafactory), ("axolotl", axolotl)):
        if key in module.DROPPED:
            return f"a {name} key lorakit does not need: {module.DROPPED[key]}"
    return None
