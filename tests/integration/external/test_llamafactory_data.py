"""lorakit trains the same text as the real LLaMA-Factory on the same registry: alpaca history and system,
and LLaMA-Factory's tool-calling demo (function_call and observation turns, tools).

Skipped unless LORAKIT_TEST_LLAMAFACTORY names a llamafactory-cli (its virtualenv's python runs
llamafactory_labels.py). Both sides use SmolLM2's tokenizer; LLaMA-Factory its ``qwen`` template, lorakit
its ``chatml``, which write tool calls the same way (<tool_call> JSON blocks, tool results apart).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lorakit.config.schema import DataSection
from lorakit.data.dataset import SplitStats, build_encoder, encode_all, load_conversations
from lorakit.model.load import load_tokenizer
from lorakit.model.resolve import resolve_model
from tests.unit.data.test_peer_data import trained_text

CLI = os.environ.get("LORAKIT_TEST_LLAMAFACTORY")
PEERS = Path(__file__).resolve().parents[4] / "shared" / "data" / "peers" / "llamafactory"
HISTORY_ROWS = [
    {"instruction": "and 3+3 ?", "input": "", "output": "6", "system": "answer with a number",
     "history": [["1+1 ?", "2"], ["2+2 ?", "4"]]},
    {"instruction": "name a colour", "input": "a warm one", "output": "red", "history": [["name a fruit", "apple"]]},
]

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not CLI, reason="set LORAKIT_TEST_LLAMAFACTORY to a llamafactory-cli"),
              pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/data/peers is not beside this checkout")]


def test_trained_text_equals_llamafactorys_own_on_history_and_tool_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAKIT_CACHE", str(Path.home() / ".cache" / "lorakit"))  # the converted SmolLM2, once
    model = resolve_model("smollm2-135m").path
    shutil.copy(PEERS / "glaive_toolcall_en_demo.json", tmp_path)
    (tmp_path / "history.json").write_text(json.dumps(HISTORY_ROWS))
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "history": {"file_name": "history.json", "columns": {"prompt": "instruction", "query": "input",
                                                             "response": "output", "system": "system",
                                                             "history": "history"}},
        "glaive": {"file_name": "glaive_toolcall_en_demo.json", "formatting": "sharegpt",
                   "columns": {"messages": "conversations", "tools": "tools"}}}))
    script = Path(__file__).with_name("llamafactory_labels.py")
    python = Path(CLI).parent / "python"
    done = subprocess.run([str(python), str(script), str(model), str(tmp_path), "qwen", "history,glaive"],
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = next(line for line in done.stdout.splitlines() if line.startswith("LABELS "))
    theirs = json.loads(answer.removeprefix("LABELS "))

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    data = DataSection(train=[f"{tmp_path}/dataset_info.json#history,glaive"], template="chatml", max_length=10**6)
    encoder, _ = build_encoder(data, tokenizer)
    examples = encode_all(load_conversations(data.train, data), encoder, data, SplitStats())
    ours = [trained_text(tokenizer, e.input_ids, e.labels) for e in examples]
    # LLaMA-Factory also trains the newline its template writes after <|im_end|>; lorakit stops at the end token.
    theirs = [[run.removesuffix("\n") for run in runs] for runs in theirs]
    assert len(ours) == len(theirs) == 2 + 300
    assert ours[0] == ["2<|im_end|>", "4<|im_end|>", "6<|im_end|>"]  # history answers trained, as LLaMA-Factory
    differing = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert not differing, f"{len(differing)} rows differ, first {differing[0]}: {ours[differing[0]]} != " \
                          f"{theirs[differing[0]]}"
    print(f"{len(ours)} rows: trained text identical to LLaMA-Factory's")
