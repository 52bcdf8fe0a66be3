import pytest

from lorakit.data.formats import Turn, detect_format, get_format
from lorakit.errors import DataError

CASES = [
    ("alpaca", {"instruction": "translate", "input": "x", "output": "y", "system": "be brief"},
     [Turn("system", "be brief", False), Turn("user", "translate\n\nx", False), Turn("assistant", "y", True)]),
    ("alpaca", {"instruction": "say hi", "input": "", "output": "hi"},
     [Turn("user", "say hi", False), Turn("assistant", "hi", True)]),
    ("messages", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                               {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
     [Turn("user", "a", False), Turn("assistant", "b", True), Turn("user", "c", False), Turn("assistant", "d", True)]),
    ("messages", {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
     [Turn("user", "a", False), Turn("assistant", "b", True)]),
    # each list in the other field's tags, as axolotl's message_property_mappings and many hub datasets write them
    ("messages", {"messages": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
     [Turn("user", "a", False), Turn("assistant", "b", True)]),
    ("messages", {"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     [Turn("user", "a", False), Turn("assistant", "b", True)]),
    ("prompt_completion", {"prompt": "2+2=", "completion": "4"},
     [Turn("text", "2+2=", False), Turn("text", "4", True)]),
    ("prompt_completion", {"prompt": [{"role": "user", "content": "q"}],
                           "completion": [{"role": "assistant", "content": "a"}]},
     [Turn("user", "q", False), Turn("assistant", "a", True)]),
    ("text", {"text": "plain words"}, [Turn("text", "plain words", True)]),
]


@pytest.mark.parametrize(("name", "row", "turns"), CASES)
def test_each_format_is_detected_and_converted(name, row, turns):
    assert detect_format(row) == name
    assert get_format(name)(row).turns == turns


@pytest.mark.parametrize(("name", "row", "message"), [
    ("messages", {"messages": []}, "non-empty 'messages' list"),
    ("messages", {"messages": [{"role": "robot", "content": "x"}]}, r"messages\[0\].role must be one of"),
    ("messages", {"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
    ("messages", {"messages": [{"role": "user", "content": 5}]}, "content must be a string"),
    ("messages", {"messages": [{"from": "human", "text": "x"}]}, r"messages\[0\].role must be one of"),
    ("prompt_completion", {"prompt": "q", "completion": ["a"]}, "both strings or both lists"),
    ("text", {"text": None}, r"needs string fields \['text'\]; text is null"),
    # a field that is there, of another type: said as such, not as missing among the fields it lists
    ("alpaca", {"instruction": 5, "output": "x"}, r"needs string fields \['instruction'\]; instruction is int 5$"),
    ("alpaca", {"instruction": "q"}, r"needs string fields \['output'\]; it has \['instruction'\]"),
])
def test_bad_rows_say_what_is_wrong(name, row, message):
    with pytest.raises(DataError, match=message):
        get_format(name)(row)


def test_unknown_fields_and_unknown_format_names():
    with pytest.raises(DataError, match="cannot tell the format from fields"):
        detect_format({"question": "q", "answer": "a"})
    with pytest.raises(DataError, match="unknown data format 'sharegpt4'"):
        get_format("sharegpt4")
