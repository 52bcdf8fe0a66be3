"""Labels against the chat template itself: the trained span is exactly the assistant text + end token."""

import pytest

from lorakit.data.formats import Turn, get_format
from lorakit.data.templates import GEMMA, PLAIN, resolve_template
from lorakit.data.tokenize import IGNORE, Encoder
from lorakit.errors import DataError


def oracle(tokenizer, messages, template):
    """LLaMA-Factory-style expected labels, built turn by turn from apply_chat_template."""
    def ids(msgs, gen=False):
        text = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=gen)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    full = ids(messages)
    labels = [IGNORE] * len(full)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start = len(ids(messages[:i], gen=True))
            end = len(ids(messages[: i + 1]))
            labels[start:end] = full[start:end]
    return full, labels


ROWS = [
    ("alpaca", {"instruction": "what is the capital of france ?", "output": "paris", "system": "you are a bot"}),
    ("messages", {"messages": [{"role": "user", "content": "say hello"}, {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "why ?"}, {"role": "assistant", "content": "because yes"}]}),
    ("prompt_completion", {"prompt": [{"role": "user", "content": "two plus two"}],
                           "completion": [{"role": "assistant", "content": "four"}]}),
]


@pytest.mark.parametrize(("fmt", "row"), ROWS)
def test_labels_match_the_chat_template_oracle(tiny_tokenizer, fmt, row):
    turns = get_format(fmt)(row).turns
    _, template = resolve_template("auto", tiny_tokenizer)
    ids, labels = Encoder(tiny_tokenizer, template).encode(turns)
    messages = [{"role": t.role, "content": t.content} for t in turns]
    assert (ids, labels) == oracle(tiny_tokenizer, messages, template)


def test_trained_span_is_exactly_the_answer_and_its_end_token(tiny_tokenizer):
    turns = [Turn("user", "say hello", False), Turn("assistant", "hello there", True)]
    _, labels = Encoder(tiny_tokenizer, resolve_template("auto", tiny_tokenizer)[1]).encode(turns)
    tokens = tiny_tokenizer.convert_ids_to_tokens([t for t in labels if t != IGNORE])
    assert tokens == ["hello", "there", "<|im_end|>"]


def test_system_prompt_is_added_only_when_the_row_has_none(tiny_tokenizer):
    template = resolve_template("auto", tiny_tokenizer)[1]
    encoder = Encoder(tiny_tokenizer, template, system_prompt="you are a bot")
    with_default = encoder.render_prompt([Turn("user", "hi", False)])
    assert with_default.startswith("<|im_start|>system\nyou are a bot<|im_end|>")
    own = encoder.render_prompt([Turn("system", "be good", False), Turn("user", "hi", False)])
    assert "you are a bot" not in own and "be good" in own


def test_text_rows_train_every_token_and_end_with_eos(tiny_tokenizer):
    ids, labels = Encoder(tiny_tokenizer, PLAIN).encode([Turn("text", "the cat sat on the mat", True)])
    assert ids[-1] == tiny_tokenizer.eos_token_id
    assert labels == ids


def test_string_prompt_completion_trains_only_the_completion(tiny_tokenizer):
    turns = get_format("prompt_completion")({"prompt": "two plus two equals ", "completion": "four"}).turns
    _, labels = Encoder(tiny_tokenizer, PLAIN).encode(turns)
    trained = [t for t in labels if t != IGNORE]
    assert tiny_tokenizer.convert_ids_to_tokens(trained) == ["four", "<eos>"]


@pytest.mark.parametrize(("vocab_token", "expected"), [("<start_of_turn>", "gemma"), ("<|im_start|>", "chatml"),
                                                       (None, "plain")])
def test_auto_template_follows_the_tokenizers_own_special_tokens(vocab_token, expected):
    from tests.conftest import build_tokenizer

    tokenizer = build_tokenizer(chat_template=None)
    if vocab_token != "<|im_start|>":
        tokenizer = _without_chatml(tokenizer)
    if vocab_token == "<start_of_turn>":
        tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    assert resolve_template("auto", tokenizer)[0] == expected


def _without_chatml(tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for t, i in tokenizer.get_vocab().items() if "im_" not in t}
    vocab = {t: n for n, t in enumerate(vocab)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


def test_gemma_template_puts_the_system_text_in_the_first_user_turn(tiny_tokenizer):
    encoder = Encoder(tiny_tokenizer, GEMMA)
    text = encoder.render_prompt([Turn("system", "be brief", False), Turn("user", "hi", False)])
    assert text == "<bos><start_of_turn>user\nbe brief\n\nhi<end_of_turn>\n<start_of_turn>model\n"


def test_tokenizer_template_requested_but_missing_is_an_error():
    from tests.conftest import build_tokenizer

    with pytest.raises(DataError, match="has no chat template"):
        resolve_template("tokenizer", build_tokenizer(chat_template=None))
