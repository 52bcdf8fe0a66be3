"""The one table of other trainers' key names: LLaMA-Factory's, axolotl's, lorakit's, and how to carry a value over.

Everything that maps a peer's key derives from it: the hints ``lorakit train`` gives for a stray peer key
(``HINTS``), the key suggestions of config loading (``aliases``), and the one-to-one keys the two importers copy
as they are (``copied``). A key that needs more than a copy (``lora_target``, ``template``, ``datasets``...) has
its row for the hint, ``copied=False``, and its own code in the importer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeerKey:
    lorakit: str  # the dotted lorakit key
    llamafactory: tuple[str, ...] = ()  # LLaMA-Factory's names for it
    axolotl: tuple[str, ...] = ()  # axolotl's names for it
    others: tuple[str, ...] = ()  # the Hugging Face trainer's and TRL's, for hints only
    note: str = ""  # how to write the value in lorakit ("" when it is the same)
    copied: bool = True  # the importers copy the value as it is (else their own code translates it)

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.llamafactory, *self.axolotl, *self.others)


LF, AX = "llamafactory", "axolotl"
KEYS: tuple[PeerKey, ...] = (
    # model
    PeerKey("model.name_or_path", ("model_name_or_path",), ("base_model",)),
    PeerKey("model.quantization", ("quantization_bit",), note="4 is nf4", copied=False),
    PeerKey("model.quantization", axolotl=("load_in_4bit",), note="true is nf4", copied=False),
    PeerKey("model.dtype", others=("bf16",), note="auto picks bfloat16 on a GPU and float32 on a CPU", copied=False),
    PeerKey("model.dtype", others=("fp16",), note="auto picks bfloat16 (or float16) on a GPU and float32 on a CPU",
            copied=False),
    # lora
    PeerKey("lora.init_from", ("adapter_name_or_path",), ("lora_model_dir",)),
    PeerKey("lora.r", ("lora_rank",), ("lora_r",)),
    PeerKey("lora.alpha", ("lora_alpha",), ("lora_alpha",),
            note="LLaMA-Factory's default is twice the rank; lorakit's is 32"),
    PeerKey("lora.dropout", ("lora_dropout",), ("lora_dropout",)),
    PeerKey("lora.use_dora", ("use_dora",), ("peft_use_dora",)),
    PeerKey("lora.use_rslora", ("use_rslora",), ("peft_use_rslora",)),
    PeerKey("lora.target_modules", ("lora_target",),
            note="'all' is all-linear; else a list such as [q_proj, v_proj]", copied=False),
    PeerKey("lora.target_modules", axolotl=("lora_target_modules",), copied=False),
    PeerKey("lora.target_modules", axolotl=("lora_target_linear",), note="true is all-linear", copied=False),
    # data
    PeerKey("data.train", ("dataset",), note="a LLaMA-Factory dataset is path/dataset_info.json#name", copied=False),
    PeerKey("data.train", axolotl=("datasets",), note="the local files of the datasets' path", copied=False),
    PeerKey("data.eval", ("eval_dataset",), note="a LLaMA-Factory dataset is path/dataset_info.json#name",
            copied=False),
    PeerKey("data.max_length", ("cutoff_len",), ("sequence_len",), ("max_seq_length",)),
    PeerKey("data.max_samples_per_file", ("max_samples",),
            note="LLaMA-Factory caps each dataset; data.max_samples caps the total"),
    PeerKey("data.val_size", ("val_size",), ("val_set_size",)),
    PeerKey("data.packing", ("packing", "neat_packing"), ("sample_packing",)),
    PeerKey("data.template", ("template",), note="lorakit renders with the tokenizer's own chat template: auto",
            copied=False),
    PeerKey("data.template", axolotl=("chat_template",), note="auto, tokenizer, chatml, gemma or plain", copied=False),
    # train
    PeerKey("train.micro_batch_size", ("per_device_train_batch_size",), ("micro_batch_size",)),
    PeerKey("train.grad_accum", ("gradient_accumulation_steps",), ("gradient_accumulation_steps",)),
    PeerKey("train.lr", ("learning_rate",), ("learning_rate",)),
    PeerKey("train.epochs", ("num_train_epochs",), ("num_epochs",)),
    PeerKey("train.max_steps", ("max_steps",), ("max_steps",)),
    PeerKey("train.warmup_ratio", ("warmup_ratio",), ("warmup_ratio",)),
    PeerKey("train.warmup_steps", ("warmup_steps",), ("warmup_steps",)),
    PeerKey("train.weight_decay", ("weight_decay",), ("weight_decay",)),
    PeerKey("train.max_grad_norm", ("max_grad_norm",), ("max_grad_norm",)),
    PeerKey("train.seed", ("seed",), ("seed",)),
    PeerKey("train.neftune_noise_alpha", ("neftune_noise_alpha",), ("neftune_noise_alpha",)),
    PeerKey("train.gradient_checkpointing", axolotl=("gradient_checkpointing",),
            note="true or false (axolotl's offload: true, recomputed rather than offloaded)", copied=False),
    PeerKey("train.scheduler", ("lr_scheduler_type",), ("lr_scheduler",), note="cosine, linear or constant",
            copied=False),
    PeerKey("train.log_every", ("logging_steps",), ("logging_steps",)),
    PeerKey("train.save_every", ("save_steps",), ("save_steps",), note="steps; a share below 1 as saves_per_epoch",
            copied=False),
    PeerKey("train.eval_every", ("eval_steps",), ("eval_steps",), note="steps; a share below 1 as evals_per_epoch",
            copied=False),
    PeerKey("train.saves_per_epoch", axolotl=("saves_per_epoch",)),
    PeerKey("train.evals_per_epoch", axolotl=("evals_per_epoch",)),
    PeerKey("train.save_total_limit", ("save_total_limit",), ("save_total_limit",)),
    # tracking and output
    PeerKey("tracking.report_to", ("report_to",), note="a list of tensorboard, mlflow; for none leave it out",
            copied=False),
    PeerKey("output.dir", ("output_dir",), note="the folder that holds the versioned run folders", copied=False),
)


def copied(peer: str) -> dict[str, str]:
    """{peer's key: lorakit's dotted key} for the keys an importer of ``peer`` (``llamafactory``, ``axolotl``)
    copies as they are."""
    return {name: row.lorakit for row in KEYS if row.copied for name in getattr(row, peer)}


def hints() -> dict[str, tuple[str, str]]:
    """{a peer's key: (lorakit's key, how to write the value)}: the first row naming it wins."""
    found: dict[str, tuple[str, str]] = {}
    for row in KEYS:
        for name in row.names:
            found.setdefault(name, (row.lorakit, row.note))
    return found


def aliases() -> dict[str, str]:
    """{a peer's key: the name of lorakit's field} (``lora_rank`` -> ``r``), for "did you mean" in any section."""
    return {name: lorakit.rsplit(".", 1)[-1] for name, (lorakit, _) in hints().items()}
