"""Data as people bring it from LLaMA-Factory, TRL and axolotl: trained where it should be, or refused by name.

The LLaMA-Factory files are read from ../shared/data/peers/llamafactory at test time; the TRL and
axolotl rows are written here from the shapes their documentation gives.
"""

import json
from pathlib import Path

import pytest

from lorakit.config.schema import DataSection
from lorakit.data.check import check_data
from lorakit.data.dataset import SplitStats, encode_all, load_conversations
from lorakit.data.templates import resolve_template
from lorakit.data.tokenize import IGNORE, Encoder
from lorakit.errors import DataError, DataRefusal

PEERS = Path(__file__).resolve().parents[4] / "shared" / "data" / "peers" / "llamafactory"
needs_peers = pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/data/peers is not beside this checkout")

# A tokenizer template that renders tools its own way (system text, <tool_call>, tool results as
# user turns), like the tool-capable templates of Qwen2.5 or Hermes models.
TOOL_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\\nTOOLS:' }}{% for t in tools %}{{ ' ' + t['function']['name'] + '='"
    " + t['function']['description'] }}{% endfor %}{{ '<|im_end|>\\n' }}{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'tool' %}{{ '<|im_start|>user\\n<tool_response>' + m['content'] + '</tool_response>"
    "<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
    "{% for c in m['tool_calls'] or [] %}{{ '<tool_call>' + c['function']['name'] + ' '"
    " + (c['function']['arguments'] | tojson) + '</tool_call>' }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def trained_text(tokenizer, ids, labels):
    """The trained tokens' text, one piece per run of trained tokens."""
    pieces, run = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == IGNORE and run:
            pieces.append(tokenizer.decode(run))
            run = []
        elif label != IGNORE:
            run.append(token)
    return pieces + ([tokenizer.decode(run)] if run else [])


def oracle(tokenizer, messages, template, tools):
    """Expected labels built turn by turn from apply_chat_template itself (tools passed every time).

    A turn's span ends at its end-of-turn token: the newline the template writes after it is not trained.
    """
    def ids(msgs, gen=False, strip=False):
        text = tokenizer.apply_chat_template(msgs, chat_template=template, tools=tools, tokenize=False,
                                             add_generation_prompt=gen)
        return tokenizer(text.rstrip() if strip else text, add_special_tokens=False)["input_ids"]

    full = ids(messages)
    labels = [IGNORE] * len(full)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start, end = len(ids(messages[:i], gen=True)), len(ids(messages[: i + 1], strip=True))
            labels[start:end] = full[start:end]
    return full, labels


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def bpe():
    from tests.conftest import build_bpe_tokenizer

    return build_bpe_tokenizer(TOOL_TEMPLATE)


TRL_TOOL_ROW = {
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather in paris ?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"paris\"}"}}]},
        {"role": "tool", "name": "get_weather", "tool_call_id": "c1", "content": "sunny and hot"},
        {"role": "assistant", "content": "it is sunny"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather of a city",
                                                "parameters": {"type": "object", "properties": {}}}}],
}


def test_trl_tool_rows_train_the_calls_and_answers_never_the_tool_results(tmp_path, bpe):
    convs = load_conversations([write_jsonl(tmp_path / "tools.jsonl", [TRL_TOOL_ROW])])
    conv = convs[0]
    assert conv.tools[0]["function"]["name"] == "get_weather"
    assert conv.turns[1].tool_calls[0]["function"]["arguments"] == {"city": "paris"}  # JSON text parsed
    assert conv.turns[0].content == "weather in paris ?"  # text parts joined
    encoder = Encoder(bpe, TOOL_TEMPLATE)
    ids, labels = encoder.encode(conv.turns, conv.tools)
    assert (ids, labels) == oracle(bpe, [t.message() for t in conv.turns], TOOL_TEMPLATE, conv.tools)
    trained = "".join(trained_text(bpe, ids, labels))
    assert '<tool_call>get_weather {"city": "paris"}</tool_call>' in trained
    assert "it is sunny" in trained
    assert "sunny and hot" not in trained and "weather of a city" not in trained


@needs_peers
def test_llamafactory_glaive_function_calls_are_trained_through_lorakits_own_template(tiny_tokenizer):
    data = DataSection(train=[str(PEERS / "glaive_toolcall_en_demo.json")], template="chatml")
    convs = load_conversations(data.train, data)
    assert len(convs) == 300
    with_call = next(c for c in convs if any(t.tool_calls for t in c.turns))
    call_turn = next(t for t in with_call.turns if t.tool_calls)
    assert call_turn.role == "assistant" and call_turn.train
    observation = next(t for t in with_call.turns if t.role == "tool")
    assert not observation.train
    _, template = resolve_template("chatml", tiny_tokenizer)
    encoder = Encoder(tiny_tokenizer, template, template_name="chatml")
    text, spans = encoder._chat_text(with_call.turns, with_call.tools)
    trained = [text[a:b] for a, b in spans]
    name = call_turn.tool_calls[0]["function"]["name"]
    assert any(f'"name": "{name}"' in piece and "<tool_call>" in piece for piece in trained)
    assert all(observation.content not in piece for piece in trained)
    assert f'"name": "{name}"' in text.split("<|im_end|>")[0]  # the tool definitions open the conversation


def test_a_template_that_drops_tools_is_refused_once_by_name(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "tools.jsonl", [TRL_TOOL_ROW] * 3)
    data = DataSection(train=[str(path)])  # auto: the test tokenizer's own ChatML knows nothing of tools
    convs = load_conversations(data.train, data)
    encoder = Encoder(tiny_tokenizer, tiny_tokenizer.chat_template, template_name="tokenizer")
    with pytest.raises(DataRefusal) as err:
        encode_all(convs, encoder, data, SplitStats())
    message = str(err.value)
    assert "\n" not in message and "tools.jsonl:1" in message
    assert "(tokenizer) does not render tool calls or tool definitions," in message
    assert "data.template: chatml" in message


@pytest.mark.parametrize(("row", "expected"), [
    ({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what ?"}]},
                   {"role": "assistant", "content": "a cat"}]}, r"messages\[0\].content\[0\] is an image part"),
    ({"prompt": "q", "chosen": "good", "rejected": "bad"}, "preference pairs .* train.method: dpo .* data.use: chosen"),
    ({"chosen": [{"role": "user", "content": "q"}], "rejected": []}, "preference pairs"),
    ({"prompt": "q", "completion": "a", "label": False}, "KTO .* set data.label_field: label"),
    ({"prompt": "q", "completions": ["a", "b"], "labels": [True, False]}, "stepwise supervision"),
    ({"messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "x"}],
      "images": ["a.png"]}, "rows have 'images': lorakit trains text models"),
])
def test_rows_for_other_trainings_are_named_in_one_line(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "d.jsonl", [row] * 5)
    with pytest.raises(DataRefusal, match=expected) as err:
        load_conversations([path])
    assert "\n" not in str(err.value) and "d.jsonl" in str(err.value)


@pytest.mark.parametrize(("row", "turns"), [
    ({"prompt": "2+2=", "chosen": "4", "rejected": "5"}, [("text", "2+2=", False), ("text", "4", True)]),
    ({"prompt": [{"role": "user", "content": "2+2"}], "chosen": [{"role": "assistant", "content": "4"}],
      "rejected": [{"role": "assistant", "content": "5"}]}, [("user", "2+2", False), ("assistant", "4", True)]),
    ({"chosen": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}],
      "rejected": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "5"}]},
     [("user", "2+2", False), ("assistant", "4", True)]),
    ({"instruction": "2+2", "chosen": "4", "rejected": "5"}, [("user", "2+2", False), ("assistant", "4", True)]),
])
def test_use_chosen_trains_the_chosen_side_of_each_preference_shape(tmp_path, row, turns):
    data = DataSection(train=["x"], use="chosen")
    conv = load_conversations([write_jsonl(tmp_path / "p.jsonl", [row])], data)[0]
    assert [(t.role, t.content, t.train) for t in conv.turns] == turns


def test_label_field_keeps_the_desirable_rows_and_says_how_many_it_left_out(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}", "label": i % 3 != 0} for i in range(9)]
    stats = SplitStats()
    convs = load_conversations([write_jsonl(tmp_path / "kto.jsonl", rows)], DataSection(train=["x"],
                                                                                    label_field="label"), stats)
    assert [c.turns[1].content for c in convs] == ["a1", "a2", "a4", "a5", "a7", "a8"]
    assert stats.notes() == [f"{tmp_path / 'kto.jsonl'}: 3 rows left out by data.label_field (labelled false)"]


def test_alpaca_history_and_row_system_become_turns_and_history_training_has_a_switch(tmp_path):
    row = {"instruction": "and 3+3 ?", "output": "6", "system": "answer with a number",
           "history": [["1+1 ?", "2"], ["2+2 ?", "4"]]}
    path = write_jsonl(tmp_path / "h.jsonl", [row])
    turns = load_conversations([path])[0].turns
    assert [(t.role, t.content, t.train) for t in turns] == [
        ("system", "answer with a number", False), ("user", "1+1 ?", False), ("assistant", "2", True),
        ("user", "2+2 ?", False), ("assistant", "4", True), ("user", "and 3+3 ?", False), ("assistant", "6", True)]
    quiet = load_conversations([path], DataSection(train=["x"], train_history=False))[0].turns
    assert [t.content for t in quiet if t.train] == ["6"]


def test_sharegpt_row_system_and_openai_name_reach_the_template(tmp_path, tiny_tokenizer):
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
             "system": "you are a bot"},
            {"messages": [{"role": "user", "name": "alice", "content": "hi"},
                          {"role": "assistant", "content": "hello"}]}]
    convs = load_conversations([write_jsonl(tmp_path / "s.jsonl", rows)])
    assert convs[0].turns[0].content == "you are a bot"
    assert convs[1].turns[0].message()["name"] == "alice"


def test_unread_fields_are_listed_once_per_file(tmp_path):
    rows = [{"instruction": "q", "output": "a", "id": i, "source": "web"} for i in range(4)]
    rows.append({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a",
                                                                 "thinking": "hm"}], "meta": 1})
    stats = SplitStats()
    load_conversations([write_jsonl(tmp_path / "a.jsonl", rows[:4]), write_jsonl(tmp_path / "m.jsonl", rows[4:])],
                       stats=stats)
    assert stats.notes() == [f"{tmp_path / 'a.jsonl'}: ignored fields: id, source",
                             f"{tmp_path / 'm.jsonl'}: ignored fields: messages[].thinking, meta"]


def test_axolotl_segments_and_per_message_training_flags(tmp_path):
    rows = [{"segments": [{"label": False, "text": "<s>Q: hi\n"}, {"label": True, "text": "A: hello</s>"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad", "training": False},
                          {"role": "user", "content": "again"}, {"role": "assistant", "content": "good", "weight": 1}]}]
    seg, chat = load_conversations([write_jsonl(tmp_path / "x.jsonl", rows[:1]),
                                    write_jsonl(tmp_path / "y.jsonl", rows[1:])])
    assert [(t.role, t.train) for t in seg.turns] == [("text", False), ("text", True)]
    assert [t.content for t in chat.turns if t.train] == ["good"]


@needs_peers
def test_llamafactory_registry_resolves_files_formats_columns_and_tags():
    registry = PEERS / "dataset_info.json"
    stats = SplitStats()
    data = DataSection(train=["x"], label_field="label", use="chosen", replace={"name": "lorakit", "author": "me"})
    convs = load_conversations([f"{registry}#identity,kto_en_demo,dpo_en_demo,c4_demo"], data, stats)
    assert stats.formats == {f"{registry}#identity": "alpaca", f"{registry}#kto_en_demo": "messages",
                             f"{registry}#dpo_en_demo": "messages", f"{registry}#c4_demo": "text"}
    assert len(convs) == 91 + 150 + 300 + 300  # kto: only the 150 rows labelled true
    assert stats.left_out == {f"{registry}#kto_en_demo": 150}
    assert "I am lorakit, an AI assistant developed by me" in convs[0].turns[-1].content
    assert not stats.placeholders
    kto = convs[91]
    assert [t.role for t in kto.turns] == ["user", "assistant"]  # role/content tags from the registry
    dpo = json.loads((PEERS / "dpo_en_demo.json").read_text())[0]
    assert convs[91 + 150].turns[-1].content == dpo["chosen"]["value"]


@needs_peers
def test_registry_mistakes_are_one_line_each(tmp_path):
    registry = PEERS / "dataset_info.json"
    for ref, expected in [(f"{registry}", "name the datasets to use"),
                          (f"{registry}#alpaca_en", "not a local file .hf_hub_url: llamafactory/alpaca_en"),
                          (f"{registry}#alpaca_en_dem", "did you mean 'alpaca_en_demo'"),
                          (f"{tmp_path}/dataset_info.json#x", "dataset registry not found")]:
        with pytest.raises(DataError, match=expected) as err:
            load_conversations([ref])
        assert "\n" not in str(err.value)


def test_registry_num_samples_and_per_file_caps(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"q": f"q{i}", "a": f"a{i}"} for i in range(10)])
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "small": {"file_name": "a.jsonl", "columns": {"prompt": "q", "response": "a"}, "num_samples": 4},
        "big": {"file_name": "a.jsonl", "columns": {"prompt": "q", "response": "a"}, "num_samples": 13}}))
    ref = f"{tmp_path}/dataset_info.json"
    small = load_conversations([f"{ref}#small"], DataSection(train=["x"], seed=1))
    assert len(small) == 4 and len({c.turns[0].content for c in small}) == 4
    assert len(load_conversations([f"{ref}#big"])) == 13  # every row once, then 3 drawn again
    capped = load_conversations([f"{ref}#small", f"{ref}#big"], per_file_cap=3)
    assert len(capped) == 6  # each dataset capped, not the total


@needs_peers
def test_data_check_reports_placeholders_of_identity_and_fills_them_with_replace(tiny_tokenizer):
    path = str(PEERS / "identity.json")
    report = check_data([path], DataSection(train=[path]), tiny_tokenizer)
    assert report.notes == ["placeholders left in the data: {{author}} (60 rows), {{name}} (77 rows); fill them "
                            "with data.replace"]
    filled = check_data([path], DataSection(train=[path], replace={"name": "kit", "author": "us"}), tiny_tokenizer)
    assert filled.notes == []


@needs_peers
@pytest.mark.parametrize("template_name", ["chatml", "gemma", "plain"])
def test_glaive_labels_match_apply_chat_template_with_tools_for_lorakits_templates(template_name):
    from tests.conftest import build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    data = DataSection(train=[str(PEERS / "glaive_toolcall_en_demo.json")], template=template_name)
    _, template = resolve_template(template_name, tokenizer)
    encoder = Encoder(tokenizer, template, template_name=template_name)
    rows = [c for c in load_conversations(data.train, data) if c.tools][:30]
    assert len(rows) == 30
    for conv in rows:
        ids, labels = encoder.encode(conv.turns, conv.tools)
        assert (ids, labels) == oracle(tokenizer, [t.message() for t in conv.turns], template, conv.tools), conv.where


def test_a_data_file_with_a_hash_in_its_name_is_a_file_not_a_registry(tmp_path):
    path = write_jsonl(tmp_path / "run#2.jsonl", [{"text": "plain words"}])
    assert load_conversations([str(path)])[0].turns[0].content == "plain words"


def test_eval_cases_of_tool_rows_keep_their_tools_and_calls_for_the_prompt(tmp_path, tiny_tokenizer):
    from lorakit.infer.evaluate import cases_from_conversations

    conv = load_conversations([write_jsonl(tmp_path / "t.jsonl", [TRL_TOOL_ROW])])[0]
    case = cases_from_conversations([conv])[0]
    assert case.reference == "it is sunny" and case.tools == conv.tools
    assert case.prompt[1].tool_calls and not any(t.train for t in case.prompt)
    _, template = resolve_template("chatml", tiny_tokenizer)
    prompt = Encoder(tiny_tokenizer, template).render_prompt(case.prompt, case.tools)
    assert "weather of a city" in prompt and '"city": "paris"' in prompt
    assert prompt.endswith("<|im_start|>tool\nsunny and hot<|im_end|>\n<|im_start|>assistant\n")


def test_eval_reads_registry_datasets_as_training_does(tmp_path):
    from lorakit.infer.evaluate import load_cases

    write_jsonl(tmp_path / "dev.jsonl", [{"q": f"question {i}", "a": f"answer {i}"} for i in range(5)])
    (tmp_path / "dataset_info.json").write_text(json.dumps({"dev": {"file_name": "dev.jsonl",
                                                                    "columns": {"prompt": "q", "response": "a"}}}))
    cases = load_cases(Path(f"{tmp_path}/dataset_info.json#dev"), limit=3)
    assert [c.reference for c in cases] == ["answer 0", "answer 1", "answer 2"]
    assert cases[0].prompt[-1].content == "question 0"


def test_a_row_ending_in_a_tool_call_is_scored_on_its_last_text_answer(tmp_path):
    from lorakit.infer.evaluate import cases_from_conversations

    row = {"messages": [*TRL_TOOL_ROW["messages"], {"role": "user", "content": "and in rome ?"},
                        {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                            "name": "get_weather", "arguments": {"city": "rome"}}}]}], "tools": TRL_TOOL_ROW["tools"]}
    conv = load_conversations([write_jsonl(tmp_path / "t.jsonl", [row])])[0]
    case = cases_from_conversations([conv])[0]
    assert case.reference == "it is sunny" and len(case.prompt) == 3
