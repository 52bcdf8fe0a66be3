import json

import pytest

from lorakit.data.dataset import load_conversations
from lorakit.data.sources import ErrorCollector, read_records
from lorakit.errors import DataError
from tests.conftest import write_jsonl

ROW = {"instruction": "say hello", "output": "hello"}


def _rows(path):
    return [r.row for r in read_records(path, ErrorCollector())]


def test_every_supported_file_type_reads_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", [ROW, ROW])
    (tmp_path / "a.json").write_text(json.dumps([ROW, ROW]))
    (tmp_path / "a.csv").write_text("instruction,output\nsay hello,hello\nsay hello,hello\n")
    pq.write_table(pa.Table.from_pylist([ROW, ROW]), tmp_path / "a.parquet")
    for suffix in ("jsonl", "json", "csv", "parquet"):
        assert _rows(tmp_path / f"a.{suffix}") == [ROW, ROW], suffix


def test_txt_gives_one_text_row_per_non_empty_line(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n")
    records = list(read_records(tmp_path / "a.txt", ErrorCollector()))
    assert [r.row for r in records] == [{"text": "first line"}, {"text": "second line"}]
    assert records[1].where.endswith("a.txt:3")


def test_malformed_json_lines_are_reported_with_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROW, "{not json", ROW, "[1, 2]"])
    with pytest.raises(DataError) as err:
        load_conversations([path])
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{path}:2: malformed JSON")
    assert lines[1] == f"{path}:4: expected a JSON object (got list)"


def test_rows_missing_fields_name_their_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [ROW, {"instruction": "no output here", "output": 3}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: alpaca row needs string fields \['output'\]"):
        load_conversations([path])


def test_errors_are_collected_up_to_twenty(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["{broken"] * 30)
    with pytest.raises(DataError) as err:
        load_conversations([path])
    message = str(err.value)
    assert message.count("malformed JSON") == 20
    assert message.endswith("(stopped after 20 errors)")


def test_missing_file_empty_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*nope\.jsonl"):
        load_conversations([tmp_path / "nope.jsonl"])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="the dataset is empty"):
        load_conversations([tmp_path / "empty.jsonl"])
    (tmp_path / "data.xml").write_text("<a/>")
    with pytest.raises(DataError, match="unsupported data file"):
        load_conversations([tmp_path / "data.xml"])
