"""Shared fixtures: an in-memory tokenizer with a chat template, tiny random models, an isolated home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = (  # noqa: SIM905 - a sentence reads better than 85 quoted words
    "system user assistant you are a helpful bot what is the capital of france paris two plus equals four "
    "say hello hi there translate to typst x y z frac sqrt sum alpha beta answer question why because one "
    "three five six seven eight nine ten red green blue cat dog sat on mat good bad yes no please thanks "
    "### System User Assistant : , . ? ! ( ) { } [ ] ^ _ = + - \\ / 1 2 3"
).split()
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def wrap_tokenizer(backend, chat_template: str | None):
    """A transformers tokenizer over a ``tokenizers`` backend, with the test special tokens and template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>",
                                        additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tokenizer(chat_template: str | None = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(SPECIALS + WORDS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return wrap_tokenizer(backend, chat_template)


def build_bpe_tokenizer(chat_template: str | None = CHATML):
    """A byte-level BPE tokenizer (the kind llama.cpp runs as ``gpt2``), trained in memory on the test words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([" ".join(WORDS)] * 4 + ["\n".join(WORDS)], trainer)
    return wrap_tokenizer(backend, chat_template)


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu need CUDA: skipped without it (bench/gpu_check.sh runs them on a GPU machine)."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (bench/gpu_check.sh runs these on a GPU machine)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture
def tiny_tokenizer():
    return build_tokenizer()


def build_model(kind: str = "llama", vocab_size: int | None = None, softcap: float | None = None, seed: int = 0,
                sliding_window: int = 16):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab_size = vocab_size or len(dict.fromkeys(SPECIALS + WORDS))
    if kind == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False,
                             initializer_range=0.2)
        return LlamaForCausalLM(config).float()
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                              max_position_embeddings=256, sliding_window=sliding_window,
                              layer_types=["sliding_attention", "full_attention"],
                              final_logit_softcapping=softcap, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                              initializer_range=0.2)
    return Gemma3ForCausalLM(config).float()


@pytest.fixture(params=["llama", "gemma3"])
def tiny_model(request):
    return build_model(request.param)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama saved as a Hugging Face folder, for end-to-end runs through the CLI."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_model("llama").save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Keep caches and run folders out of the user's home and the repo."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DEBUG", "0")  # lorakit -v sets DEBUG=1 for its children; never for the next test
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


ALPACA_ROWS = [
    {"instruction": "what is the capital of france ?", "input": "", "output": "paris"},
    {"instruction": "what is two plus two ?", "output": "four"},
    {"instruction": "say hello", "input": "please", "output": "hello there", "system": "you are a helpful bot"},
    {"instruction": "translate to typst", "input": "x ^ 2", "output": "x ^ 2"},
] * 6
