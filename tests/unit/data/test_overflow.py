"""on_overflow: split — long plain texts are cut into windows and trained whole, nothing lost."""

import json
from pathlib import Path

import pytest

from lorakit.config.schema import DataSection
from lorakit.data.dataset import SplitStats, build_encoder, encode_all, load_conversations
from lorakit.data.overflow import split_windows
from lorakit.data.packing import collate, pack_rows
from lorakit.data.tokenize import IGNORE, Example

PEERS = Path(__file__).resolve().parents[4] / "shared" / "data" / "peers" / "llamafactory"


@pytest.mark.parametrize("stride", [0, 1, 7])
def test_windows_cover_the_text_and_train_each_token_once(stride):
    ids = list(range(100, 203))  # 103 tokens
    windows = split_windows(Example(ids, list(ids), "doc"), max_length=20, stride=stride)
    assert all(len(w) <= 20 for w in windows)
    step = 20 - stride
    assert [w.input_ids[0] for w in windows] == ids[::step][: len(windows)]
    assert windows[-1].input_ids[-1] == ids[-1]  # the end of the text is kept
    predicted = [w.input_ids[0] + i for w in windows for i, t in enumerate(w.labels) if i > 0 and t != IGNORE]
    # Each token is a target at most once; with an overlap every token but the first is one.
    assert len(predicted) == len(set(predicted))
    expected = set(ids[1:]) if stride else set(ids[1:]) - {w.input_ids[0] for w in windows}
    assert set(predicted) == expected


def test_split_keeps_every_token_of_long_texts_where_truncate_loses_them(tmp_path):
    from tests.conftest import build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    words = ["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "said", "hello", "to", "the", "cat"]
    rows = [{"text": " ".join(words * (5 + 3 * i))} for i in range(6)]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    results = {}
    for policy in ("truncate", "split"):
        data = DataSection(train=[str(path)], max_length=64, on_overflow=policy)
        encoder, _ = build_encoder(data, tokenizer)
        stats = SplitStats()
        examples = encode_all(load_conversations(data.train, data), encoder, data, stats)
        results[policy] = (examples, stats)
    full = sum(len(encoder.encode(c.turns)[0]) for c in load_conversations([str(path)]))
    split, stats = results["split"]
    assert sum(len(e) for e in split) == full and stats.split == 6 and stats.truncated == 0
    assert all(len(e) <= 64 for e in split)
    truncated = sum(len(e) for e in results["truncate"][0])
    assert truncated == 6 * 64 < full


def test_chat_rows_under_split_are_truncated_and_counted(tmp_path, tiny_tokenizer):
    row = {"messages": [{"role": "user", "content": "hi " * 80}, {"role": "assistant", "content": "hello " * 80}]}
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    data = DataSection(train=[str(path)], max_length=100, on_overflow="split")
    encoder, _ = build_encoder(data, tiny_tokenizer)
    stats = SplitStats()
    examples = encode_all(load_conversations(data.train, data), encoder, data, stats)
    assert [len(e) for e in examples] == [100] and stats.truncated == 1 and stats.split == 0


def test_stride_must_be_below_max_length():
    with pytest.raises(ValueError, match=r"data.stride \(64\) must be below data.max_length \(64\)"):
        DataSection(train=["x"], max_length=64, on_overflow="split", stride=64)


@pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/data/peers is not beside this checkout")
def test_c4_demo_split_and_packed_fills_rows_densely():
    from tests.conftest import build_bpe_tokenizer

    data = DataSection(train=[str(PEERS / "c4_demo.jsonl")], max_length=256, on_overflow="split", packing=True)
    encoder, _ = build_encoder(data, build_bpe_tokenizer())
    stats = SplitStats()
    examples = encode_all(load_conversations(data.train, data), encoder, data, stats)
    assert stats.split > 0 and stats.truncated == 0 and stats.dropped == 0
    rows = pack_rows(examples, data.max_length)
    batch = collate(rows, pad_id=0)
    # Full windows fill their rows exactly; the short tails are packed together: above 97% of the
    # computed positions are real tokens (only the last, partly filled rows carry padding).
    assert batch.num_tokens / batch.num_computed > 0.97
