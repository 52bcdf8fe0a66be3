"""Preference pairs under train.method dpo: every shape the peers write, read as prompt + chosen / rejected."""

import json
from pathlib import Path

import pytest

from lorakit.config.schema import DataSection
from lorakit.data.dataset import SplitStats, build_encoder, encode_pairs, load_conversations
from lorakit.data.tokenize import IGNORE
from lorakit.errors import DataRefusal
from tests.conftest import write_jsonl

PEERS = Path(__file__).resolve().parents[4] / "shared" / "data" / "peers" / "llamafactory"
needs_peers = pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/data/peers is not beside this checkout")


def sides(conv):
    return ([(t.role, t.content, t.train) for t in conv.turns], [(t.role, t.content, t.train) for t in conv.rejected])


USER, GOOD, BAD = ("user", "2+2", False), ("assistant", "4", True), ("assistant", "5", True)


@pytest.mark.parametrize(("row", "expected"), [
    # TRL, explicit prompt, strings: plain text segments, as TRL treats them
    ({"prompt": "2+2=", "chosen": " 4", "rejected": " 5"},
     ([("text", "2+2=", False), ("text", " 4", True)], [("text", "2+2=", False), ("text", " 5", True)])),
    # TRL, explicit prompt, messages
    ({"prompt": [{"role": "user", "content": "2+2"}], "chosen": [{"role": "assistant", "content": "4"}],
      "rejected": [{"role": "assistant", "content": "5"}]}, ([USER, GOOD], [USER, BAD])),
    # TRL, implicit prompt: the shared messages
    ({"chosen": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}],
      "rejected": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "5"}]},
     ([USER, GOOD], [USER, BAD])),
    # TRL, implicit prompt, texts: cut before the space where they differ (trl.extract_prompt)
    ({"chosen": "The sky is blue.", "rejected": "The sky is green."},
     ([("text", "The sky is", False), ("text", " blue.", True)],
      [("text", "The sky is", False), ("text", " green.", True)])),
    # LLaMA-Factory ranking, alpaca
    ({"instruction": "2+2", "input": "", "chosen": "4", "rejected": "5"}, ([USER, GOOD], [USER, BAD])),
    # LLaMA-Factory ranking, sharegpt, with an earlier answer that is prompt, not trained
    ({"conversations": [{"from": "human", "value": "1+1"}, {"from": "gpt", "value": "2"},
                        {"from": "human", "value": "2+2"}], "chosen": {"from": "gpt", "value": "4"},
      "rejected": {"from": "gpt", "value": "5"}},
     ([("user", "1+1", False), ("assistant", "2", False), USER, GOOD],
      [("user", "1+1", False), ("assistant", "2", False), USER, BAD])),
    # axolotl chatml.intel (Intel/orca_dpo_pairs)
    ({"system": "be brief", "question": "2+2", "chosen": "4", "rejected": "5"},
     ([("system", "be brief", False), USER, GOOD], [("system", "be brief", False), USER, BAD])),
])
def test_each_peer_shape_is_a_prompt_with_a_chosen_and_a_rejected_answer(tmp_path, row, expected):
    conv = load_conversations([write_jsonl(tmp_path / "p.jsonl", [row])], pairs=True)[0]
    assert sides(conv) == expected


@needs_peers
def test_llamafactorys_dpo_demo_through_its_registry_entry(tiny_tokenizer):
    rows = json.loads((PEERS / "dpo_en_demo.json").read_text())
    convs = load_conversations([f"{PEERS / 'dataset_info.json'}#dpo_en_demo"], pairs=True)
    assert len(convs) == len(rows) == 300
    for conv, row in zip(convs, rows, strict=True):
        assert [t.content for t in conv.turns[:-1]] == [m["value"] for m in row["conversations"]]
        assert conv.turns[-1].content == row["chosen"]["value"]
        assert conv.rejected[-1].content == row["rejected"]["value"]
        assert [t.train for t in conv.turns] == [False] * (len(conv.turns) - 1) + [True]


def test_pairs_are_labelled_on_their_answers_only_after_the_same_prompt(tmp_path, tiny_tokenizer):
    row = {"prompt": [{"role": "user", "content": "what is two plus two ?"}],
           "chosen": [{"role": "assistant", "content": "four"}],
           "rejected": [{"role": "assistant", "content": "five six"}]}
    data = DataSection(train=["x"], max_length=64, template="chatml")
    convs = load_conversations([write_jsonl(tmp_path / "p.jsonl", [row])], data, pairs=True)
    encoder, _ = build_encoder(data, tiny_tokenizer)
    pair = encode_pairs(convs, encoder, data, SplitStats())[0]
    prompt = encoder.prompt_ids(convs[0].turns[:-1])
    for side, answer in ((pair.chosen, "four"), (pair.rejected, "five six")):
        assert side.input_ids[: len(prompt)] == prompt and set(side.labels[: len(prompt)]) == {IGNORE}
        trained = [t for t in side.labels if t != IGNORE]
        assert tiny_tokenizer.decode(trained).split() == [*answer.split(), "<|im_end|>"]


@pytest.mark.parametrize("row", [{"instruction": "2+2", "output": "4"},
                                 {"messages": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": "a"}]}])
def test_rows_that_are_not_pairs_are_one_line_naming_what_a_pair_needs(tmp_path, row):
    path = write_jsonl(tmp_path / "sft.jsonl", [row] * 3)
    with pytest.raises(DataRefusal, match=r"sft\.jsonl: rows are not preference pairs .* needs 'chosen' and "
                                          r"'rejected'") as err:
        load_conversations([path], pairs=True)
    assert "\n" not in str(err.value)


def test_over_length_pairs_are_cut_on_both_sides_or_dropped(tmp_path, tiny_tokenizer):
    row = {"prompt": "two plus two", "chosen": " four " * 3, "rejected": " five " * 12}
    for policy, kept, longest in (("truncate", 1, 8), ("drop", 0, None)):
        data = DataSection(train=["x"], max_length=8, on_overflow=policy)
        convs = load_conversations([write_jsonl(tmp_path / "p.jsonl", [row])], data, pairs=True)
        encoder, _ = build_encoder(data, tiny_tokenizer)
        stats = SplitStats()
        pairs = encode_pairs(convs, encoder, data, stats)
        assert len(pairs) == kept and stats.overflow == 1
        if pairs:
            assert pairs[0].longest == longest and len(pairs[0].chosen) <= 8
