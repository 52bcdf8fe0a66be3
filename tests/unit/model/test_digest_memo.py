"""A base model file's sha256 is remembered by its stat, and hashed again whenever the file may have changed."""

from __future__ import annotations

import json
import os

import lorakit.model.digest_memo as memo
from lorakit.digest import file_sha256


def counting(monkeypatch) -> list[str]:
    hashed: list[str] = []
    monkeypatch.setattr(memo, "file_sha256", lambda path: hashed.append(path.name) or file_sha256(path))
    return hashed


def test_an_unchanged_file_is_hashed_once(tmp_path, monkeypatch):
    hashed = counting(monkeypatch)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"weights" * 1000)
    cache = tmp_path / "cache"
    assert memo.remembered_sha256(model, cache) == file_sha256(model)
    assert memo.remembered_sha256(model, cache) == file_sha256(model)
    assert hashed == ["m.gguf"]


def test_a_file_rewritten_with_its_old_size_and_modification_time_is_hashed_again(tmp_path, monkeypatch):
    hashed = counting(monkeypatch)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"a" * 4096)
    cache = tmp_path / "cache"
    before = memo.remembered_sha256(model, cache)
    st = model.stat()
    model.write_bytes(b"b" * 4096)  # the same size, then its modification time set back: the change time moves
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = memo.remembered_sha256(model, cache)
    assert after == file_sha256(model) != before
    assert hashed == ["m.gguf", "m.gguf"]


def test_an_unreadable_memo_means_hashing_again(tmp_path, monkeypatch):
    hashed = counting(monkeypatch)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x" * 100)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / memo.MEMO).write_text("{not json")
    assert memo.remembered_sha256(model, cache) == file_sha256(model)
    (cache / memo.MEMO).write_text(json.dumps({str(model.resolve()): {"stat": "wrong", "sha256": 5}}))
    assert memo.remembered_sha256(model, cache) == file_sha256(model)
    assert hashed == ["m.gguf", "m.gguf"]
    assert memo.remembered_sha256(model, cache) == file_sha256(model)  # kept again after the bad entry
    assert hashed == ["m.gguf", "m.gguf"]
