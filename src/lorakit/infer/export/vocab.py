"""The tokenizer part of a GGUF: copied from the base model's own GGUF when it came as one (exact), else
built from the Hugging Face tokenizer with the gguf package's vocabulary helpers."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lorakit.errors import ModelError

log = logging.getLogger(__name__)

OWN_KEYS = ("tokenizer.chat_template",)  # written from the run, never copied


def copy_tokenizer(writer: Any, source: Path, vocab_size: int) -> bool:
    """Copy every ``tokenizer.*`` field of ``source``; False (nothing written) when its vocabulary differs."""
    import gguf

    from lorakit.infer.export.gguf_fields import read_fields

    fields = read_fields(source, lambda key: key.startswith("tokenizer.") and key not in OWN_KEYS)
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.value) != vocab_size:
        return False
    for key, field in fields.items():
        kind = gguf.GGUFValueType(field.kind)
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.value, kind, sub_type=gguf.GGUFValueType(field.item_kind))
        else:
            writer.add_key_value(key, field.value, kind)
    return True


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for the splitting a byte-level BPE tokenizer does before merging."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre])
    kinds = [p.get("type") for p in parts]
    if "Digits" in kinds and any(p.get("individual_digits") for p in parts) and "ByteLevel" in kinds:
        return "smollm"
    pattern = json.dumps(parts)
    if "Split" in kinds and "\\\\p{N}{1,3}" in pattern:
        return "llama-bpe"
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    log.warning("GGUF export: unknown pre-tokenizer %s; llama.cpp will use its default splitting", kinds)
    return "default"


def build_tokenizer(writer: Any, folder: Path) -> None:
    """Tokens, scores, types, merges and special tokens from a Hugging Face ``tokenizer.json``.

    Raises:
        ModelError: a tokenizer kind llama.cpp cannot run (only byte-level BPE and SentencePiece-style BPE).
    """
    import gguf

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelError(f"{folder}: no tokenizer.json, which the GGUF export reads the vocabulary from")
    tokenizer_json = json.loads(path.read_text(encoding="utf-8"))
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise ModelError(f"{path}: a {model.get('type')} tokenizer cannot be written to GGUF; llama.cpp runs "
                         f"byte-level BPE (gpt2) and SentencePiece-style (llama) vocabularies")
    byte_level = not model.get("byte_fallback", False)
    decoder = (tokenizer_json.get("decoder") or {}).get("type")
    needed = "ByteLevel" if byte_level else "Sequence"  # what the gguf package's readers (and llama.cpp) decode
    if decoder != needed:
        kind = "byte-level BPE (gpt2)" if byte_level else "SentencePiece-style BPE (llama)"
        raise ModelError(f"{path}: decoder is {decoder or 'missing'}, and a {kind} vocabulary is decoded by "
                         f"llama.cpp as a {needed} decoder would; this tokenizer cannot be written to GGUF "
                         "(export --merge gives a model folder instead)")
    vocab = gguf.BpeVocab(folder) if byte_level else gguf.LlamaHfVocab(folder)
    tokens, scores, types = zip(*vocab.all_tokens(), strict=True)
    types = list(types)
    for added in tokenizer_json.get("added_tokens", []):  # the vocabulary helper marks these normal text
        if added["id"] < len(types):
            types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model(vocab.tokenizer_model)
    if byte_level:
        writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json))
    writer.add_token_list(list(tokens))
    writer.add_token_scores(list(scores))
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=byte_level, n_vocab=len(tokens))
    special.chat_template = None  # the run's own template is written by the caller
    special.add_to_gguf(writer, quiet=True)
