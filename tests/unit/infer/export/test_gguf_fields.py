import gguf
import numpy as np
import pytest

from lorakit.errors import ModelError
from lorakit.infer.export.gguf_fields import read_fields

T = gguf.GGUFValueType


def write_gguf(path, endianess=gguf.GGUFEndian.LITTLE):
    """A GGUF with a field of every kind, arrays of scalars, strings and arrays, and one tensor after them."""
    writer = gguf.GGUFWriter(path, "llama", endianess=endianess)
    for kind, value in [(T.UINT8, 7), (T.INT8, -7), (T.UINT16, 700), (T.INT16, -700), (T.UINT32, 70_000),
                        (T.INT32, -70_000), (T.FLOAT32, 0.5), (T.BOOL, True), (T.STRING, "Grüße {{ x }}"),
                        (T.UINT64, 2**40), (T.INT64, -(2**40)), (T.FLOAT64, 1 / 3)]:
        writer.add_key_value(f"test.{kind.name.lower()}", value, kind)
    writer.add_array("tokenizer.ggml.tokens", ["<bos>", "", "ü", "<start_of_turn>"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.25, 3.0])
    writer.add_array("tokenizer.ggml.token_type", [3, 1, 1, 4])
    writer.add_array("test.flags", [True, False])
    writer.add_key_value("test.nested", [[1, 2], [3]], T.ARRAY, sub_type=T.ARRAY)
    writer.add_string("lorakit.run", "typst-v001")
    writer.add_tensor("weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_readers_fields(path):
    fields = gguf.GGUFReader(path).fields
    return {key: (int(f.types[0]), f.contents()) for key, f in fields.items() if not key.startswith("GGUF.")}


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_every_field_reads_as_the_gguf_package_reads_it(tmp_path, endianess):
    path = write_gguf(tmp_path / "model.gguf", endianess)
    fields = read_fields(path, lambda key: True)
    expected = gguf_readers_fields(path)
    assert list(fields) == list(expected)  # the file's order
    nested = fields.pop("test.nested")
    assert {key: (f.kind, f.value) for key, f in fields.items()} == {k: v for k, v in expected.items()
                                                                     if k != "test.nested"}
    assert fields["tokenizer.ggml.tokens"].item_kind == T.STRING and fields["test.flags"].item_kind == T.BOOL
    # the gguf package flattens an array of arrays (its own FIXME); read here as written, where this reads it
    flat = endianess == gguf.GGUFEndian.BIG  # that file is read through the gguf package
    assert (nested.item_kind, nested.value) == ((T.INT32, [1, 2, 3]) if flat else (T.ARRAY, [[1, 2], [3]]))


def test_only_the_fields_asked_for_are_built_and_the_others_stepped_over(tmp_path):
    path = write_gguf(tmp_path / "model.gguf")
    fields = read_fields(path, lambda key: key.startswith(("lorakit.", "test.float64")))
    assert {key: f.value for key, f in fields.items()} == {"test.float64": 1 / 3, "lorakit.run": "typst-v001"}


def test_a_file_cut_short_or_not_a_gguf_is_an_error_naming_it(tmp_path):
    whole = write_gguf(tmp_path / "model.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:200])  # inside the fields
    with pytest.raises(ModelError, match=r"cut\.gguf: its fields are cut short"):
        read_fields(cut, lambda key: True)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"PK\x03\x04" + whole[4:])
    with pytest.raises(ModelError, match=r"other\.gguf: not a GGUF file"):
        read_fields(other, lambda key: True)
