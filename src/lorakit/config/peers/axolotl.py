"""axolotl's flat training config as a nested lorakit config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorakit.config.peers.keys import copied
from lorakit.config.peers.translation import Translation, relative

SIMPLE = copied("axolotl")  # the keys copied as they are, from the one table (peers/keys.py)
DROPPED = {
    "base_model_config": "the tokenizer and config come with the model",
    "model_type": "read from the model's config", "tokenizer_type": "read from the model's config",
    "strict": "lorakit always rejects unknown keys", "dataset_prepared_path": "lorakit keeps no dataset cache",
    "flash_attention": "lorakit picks the attention implementation itself", "xformers_attention": "same",
    "sdp_attention": "same", "bf16": "model.dtype auto picks bfloat16 on a GPU (float32 on a CPU)",
    "fp16": "model.dtype auto picks bfloat16 or float16 on a GPU", "tf32": "a GPU setting lorakit leaves as is",
    "optimizer": "lorakit trains with AdamW", "eval_sample_packing": "evaluation follows data.packing",
    "pad_to_sequence_len": "lorakit batches without padding",
}
FORMATS = {"alpaca": "alpaca", "chat_template": "messages", "sharegpt": "messages", "completion": "text",
           "input_output": "segments"}
MESSAGE_FIELDS = ("messages", "conversations")  # what data/messages.py reads
TURN_FIELDS = (("role", "content"), ("from", "value"))
TEMPLATES = {"chatml": "chatml", "gemma": "gemma", "gemma3": "gemma", "tokenizer_default": "tokenizer"}


def translate(raw: dict[str, Any], source: Path, out_dir: Path, dataset_dir: str | None = None) -> Translation:
    """The lorakit config for an axolotl file, and a line for each of its keys."""
    t = Translation("axolotl")
    handled = t.simple(raw, SIMPLE) | t.dropped_all(raw, DROPPED) | _adapter(t, raw)
    handled |= _datasets(t, raw, "datasets", "data.train", source, out_dir)
    handled |= _datasets(t, raw, "test_datasets", "data.eval", source, out_dir) | _rest(t, raw)
    handled |= t.common(raw, "lr_scheduler") | t.cadence(raw, float(raw.get("num_epochs") or 1)) | _preference(t, raw)
    t.leftovers(raw, handled | t.selection(raw) | t.distributed(raw))
    return t


def _adapter(t: Translation, raw: dict[str, Any]) -> set[str]:
    adapter = raw.get("adapter")
    if adapter == "qlora" or raw.get("load_in_4bit"):
        t.set("model.quantization", "nf4", "adapter" if adapter == "qlora" else "load_in_4bit")
    if adapter not in ("lora", "qlora"):
        t.none("adapter", f"{adapter or 'none (full fine-tuning)'}: lorakit trains LoRA adapters")
    if raw.get("load_in_8bit"):
        t.none("load_in_8bit", "lorakit quantises the base to 4-bit NF4 only")
    if raw.get("lora_target_linear"):
        t.set("lora.target_modules", "all-linear", "lora_target_linear")
    elif raw.get("lora_target_modules"):
        modules = raw["lora_target_modules"]  # axolotl takes one name as a plain string too
        names = [modules] if isinstance(modules, str) else [str(m) for m in modules]
        t.set("lora.target_modules", names, "lora_target_modules")
    return {"adapter", "load_in_4bit", "load_in_8bit", "lora_target_linear", "lora_target_modules"}


def _datasets(t: Translation, raw: dict[str, Any], key: str, dotted: str, source: Path, out_dir: Path) -> set[str]:
    entries = raw.get(key) or []
    paths, formats = [], set()
    for entry in entries if isinstance(entries, list) else []:
        path = Path(str(entry.get("path", ""))) if isinstance(entry, dict) else Path(str(entry))
        local = path if path.is_absolute() else source.parent / path
        if not local.exists():
            t.none(f"{key}: {path}", "not a local file: lorakit reads local files (download it first)")
            continue
        paths.append(relative(local, out_dir))
        kind = entry.get("type") if isinstance(entry, dict) else None
        formats.add(FORMATS.get(str(kind), "auto") if kind else "auto")
        if isinstance(entry, dict):
            _message_fields(t, entry, f"{key}: {path}")
    if paths:
        t.set(dotted, paths, key)
        if key == "datasets" and len(formats) == 1 and formats != {"auto"}:
            t.set("data.format", formats.pop(), "datasets[].type")
    return {key}


def _message_fields(t: Translation, entry: dict[str, Any], where: str) -> None:
    """Say where a chat dataset's fields or trained roles differ from what lorakit reads (messages or
    conversations, role/content or from/value, the assistant's turns trained)."""
    if entry.get("field_messages", "messages") not in MESSAGE_FIELDS:
        t.none(f"{where} field_messages", "lorakit reads messages or conversations; rename the field")
    mapping = entry.get("message_property_mappings")
    mapping = mapping if isinstance(mapping, dict) else {}
    fields = (mapping.get("role", "role"), mapping.get("content", "content"))
    if fields not in TURN_FIELDS:
        t.none(f"{where} message_property_mappings", "lorakit reads role/content or from/value; rename the fields")
    roles = entry.get("roles_to_train")
    roles = [roles] if isinstance(roles, str) else roles  # one role may be written as a plain string
    if roles is not None and set(roles) != {"assistant"}:
        t.none(f"{where} roles_to_train", "lorakit trains the assistant's turns only")


def _rest(t: Translation, raw: dict[str, Any]) -> set[str]:
    template = raw.get("chat_template")
    if template in TEMPLATES:
        t.set("data.template", TEMPLATES[template], "chat_template")
    elif template:
        t.none("chat_template", f"{template}: lorakit renders with the tokenizer's own template, or chatml, "
                                "gemma, plain")
    if raw.get("train_on_inputs"):
        t.none("train_on_inputs", "lorakit trains the answers only (plain text rows are trained whole)")
    checkpointing = raw.get("gradient_checkpointing")
    if isinstance(checkpointing, bool):
        t.set("train.gradient_checkpointing", checkpointing, "gradient_checkpointing")
    elif checkpointing in ("offload", "unsloth"):  # activations kept on the CPU instead of recomputed
        t.set("train.gradient_checkpointing", True, "gradient_checkpointing",
              f"{checkpointing}: lorakit recomputes the activations instead of offloading them")
    elif checkpointing is not None:
        t.none("gradient_checkpointing", f"{checkpointing!r}: lorakit's train.gradient_checkpointing is true or false")
    return {"chat_template", "train_on_inputs", "gradient_checkpointing"}


def _preference(t: Translation, raw: dict[str, Any]) -> set[str]:
    """axolotl's ``rl: dpo`` (or ipo) with rl_beta (dpo_beta before it) and dpo_label_smoothing."""
    rl = raw.get("rl")
    if rl in ("dpo", "ipo"):
        t.set("train.method", "dpo", "rl")
        if rl == "ipo":
            t.set("dpo.loss", "ipo", "rl")
    elif rl:
        t.none("rl", f"{rl}: lorakit trains supervised fine-tuning and DPO (rl: dpo, ipo)")
    for key in ("rl_beta", "dpo_beta"):
        if raw.get(key) is not None:
            t.set("dpo.beta", float(raw[key]), key)
    if raw.get("dpo_label_smoothing"):
        t.set("dpo.label_smoothing", float(raw["dpo_label_smoothing"]), "dpo_label_smoothing")
    return {"rl", "rl_beta", "dpo_beta", "dpo_label_smoothing"}
