"""LLaMA-Factory's newer message format: content as parts with a value (text, reasoning, tool calls), tool results
as tool messages, and a per-message loss_weight; for SFT and DPO alike."""

import json

import pytest

from lorakit.config.schema import DataSection
from lorakit.data.dataset import SplitStats, build_encoder, encode_all, encode_pairs, load_conversations
from lorakit.data.tokenize import IGNORE
from lorakit.errors import DataError, DataRefusal
from tests.conftest import CHATML, build_tokenizer, write_jsonl

# ChatML with a thinking block, as Qwen3's template renders an assistant's reasoning_content.
THINKING = CHATML.replace(
    "'\\n' + message['content']",
    "'\\n' + ('<think> ' + message['reasoning_content'] + ' </think> ' if message.get('reasoning_content') else '')"
    " + message['content']")


def text(value):
    return [{"type": "text", "value": value}]


ROW = {"messages": [
    {"role": "system", "content": text("you are a helpful bot"), "loss_weight": 0.0},
    {"role": "user", "content": text("what is two plus two ?"), "loss_weight": 0.0},
    {"role": "assistant", "content": text("five"), "loss_weight": 0.0},  # a wrong earlier answer: not trained
    {"role": "user", "content": text("why ?"), "loss_weight": 0.0},
    {"role": "assistant", "content": [{"type": "reasoning", "value": "two plus two"},
                                      {"type": "text", "value": "four because two plus two"}], "loss_weight": 1.0},
]}


def trained_words(tokenizer, ids, labels):
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE]).split()


def test_parts_reasoning_and_loss_weight_train_what_llamafactory_trains(tmp_path):
    tokenizer = build_tokenizer(THINKING)
    data = DataSection(train=["x"], max_length=128)
    convs = load_conversations([write_jsonl(tmp_path / "v1.jsonl", [ROW])], data)
    assert [t.train for t in convs[0].turns] == [False, False, False, False, True]
    assert convs[0].turns[2].content == "five" and dict(convs[0].turns[4].extra) == {
        "reasoning_content": "two plus two"}
    encoder, _ = build_encoder(data, tokenizer)
    example = encode_all(convs, encoder, data, SplitStats())[0]
    # the thinking block and the answer are trained, the masked earlier answer is not
    words = trained_words(tokenizer, example.input_ids, example.labels)  # "<think>" is three unknown tokens
    assert words[3:] == ["two", "plus", "two", "<unk>", "<unk>", "<unk>", "four", "because", "two", "plus", "two",
                         "<|im_end|>"]


def test_reasoning_under_a_template_without_a_thinking_block_is_refused_by_name(tmp_path):
    data = DataSection(train=["x"], max_length=128)
    convs = load_conversations([write_jsonl(tmp_path / "v1.jsonl", [ROW])], data)
    encoder, _ = build_encoder(data, build_tokenizer())  # plain ChatML: no reasoning_content
    with pytest.raises(DataRefusal, match=r"\(tokenizer\) has no thinking block, so assistant turns with reasoning"):
        encode_all(convs, encoder, data, SplitStats())


def test_tool_call_parts_and_tool_results_become_calls_and_untrained_results(tmp_path):
    call = {"name": "lookup", "arguments": {"query": "paris"}}
    row = {"messages": [
        {"role": "user", "content": text("the capital of france ?")},
        {"role": "assistant", "content": [{"type": "tool_call", "value": json.dumps(call)}]},
        {"role": "tool", "content": text("paris")},
        {"role": "assistant", "content": text("paris"), "loss_weight": 1},
    ], "tools": json.dumps([{"name": "lookup", "description": "find", "parameters": {"type": "object"}}])}
    conv = load_conversations([write_jsonl(tmp_path / "tools.jsonl", [row])])[0]
    assert [(t.role, t.train) for t in conv.turns] == [("user", False), ("assistant", True), ("tool", False),
                                                       ("assistant", True)]
    assert conv.turns[1].tool_calls == ({"type": "function", "function": call},)
    assert conv.tools[0]["function"]["name"] == "lookup"


@pytest.mark.parametrize(("message", "error"), [
    ({"role": "assistant", "content": text("x"), "loss_weight": 0.5},
     r"messages\[1\]\.loss_weight must be 0 \(not trained\) or 1 \(trained\) \(got 0\.5\)"),
    ({"role": "user", "content": text("x"), "loss_weight": 1.0}, "only assistant turns can be trained"),
    ({"role": "user", "content": [{"type": "reasoning", "value": "x"}]}, "reasoning part in a user turn"),
])
def test_what_lorakit_cannot_train_as_written_is_one_line(tmp_path, message, error):
    row = {"messages": [{"role": "user", "content": text("q")}, message,
                        {"role": "assistant", "content": text("a")}]}
    with pytest.raises(DataError, match=error):
        load_conversations([write_jsonl(tmp_path / "bad.jsonl", [row])])


def test_llamafactorys_newer_dpo_rows_are_pairs_and_refused_under_sft_with_the_pointer(tmp_path, tiny_tokenizer):
    prompt = [{"role": "user", "content": text("what is two plus two ?")}]
    row = {"chosen_messages": [*prompt, {"role": "assistant", "content": text("four")}],
           "rejected_messages": [*prompt, {"role": "assistant", "content": text("five")}]}
    path = write_jsonl(tmp_path / "dpo.jsonl", [row])
    data = DataSection(train=["x"], max_length=64)
    convs = load_conversations([path], data, pairs=True)
    assert [t.content for t in convs[0].turns] == ["what is two plus two ?", "four"]
    assert [t.content for t in convs[0].rejected] == ["what is two plus two ?", "five"]
    encoder, _ = build_encoder(data, tiny_tokenizer)
    pair = encode_pairs(convs, encoder, data, SplitStats())[0]
    assert trained_words(tiny_tokenizer, pair.rejected.input_ids, pair.rejected.labels) == ["five", "<|im_end|>"]
    with pytest.raises(DataRefusal, match=r"preference pairs .* train\.method: dpo"):
        load_conversations([path], data)
