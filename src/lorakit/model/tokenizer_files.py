"""Saving a tokenizer so that loading it again is quick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG = "tokenizer_config.json"


def save_tokenizer(tokenizer: Any, folder: str | Path) -> None:
    """``save_pretrained``, and the added tokens written into tokenizer_config.json as transformers 4 wrote them.

    transformers 5 leaves them out, and loading a tokenizer without them parses its whole tokenizer.json in
    Python once more just to find them: 1.2 s of Gemma-3's 33 MB file at every load (a training run's start,
    every ``lorakit infer``). With them the loaded tokenizer is the same (every token id, every added token)."""
    tokenizer.save_pretrained(folder)
    path = Path(folder) / CONFIG
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config or not getattr(tokenizer, "added_tokens_decoder", None):
        return
    config["added_tokens_decoder"] = {
        str(index): {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
                     "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special}
        for index, token in sorted(tokenizer.added_tokens_decoder.items())}
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
