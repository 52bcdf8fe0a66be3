"""The real LLaMA-Factory (pip-installed in its own virtualenv) as a tracked `lorakit run`.

Skipped unless LORAKIT_TEST_LLAMAFACTORY names its CLI; docs/benchmarks.md has the commands that made one here
(torch stays at the CPU build: a plain `pip install llamafactory` pulls a multi-GB CUDA build).
"""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorakit.cli.main import cli
from lorakit.model.resolve import resolve_model

CLI = os.environ.get("LORAKIT_TEST_LLAMAFACTORY")
PEERS = Path(__file__).resolve().parents[4] / "shared" / "data" / "peers" / "llamafactory"

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not CLI, reason="set LORAKIT_TEST_LLAMAFACTORY to a llamafactory-cli"),
              pytest.mark.skipif(not PEERS.is_dir(), reason="../shared/data/peers/llamafactory is not beside this "
                                                            "checkout")]


def test_a_real_llamafactory_sft_is_a_tracked_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAKIT_CACHE", str(Path.home() / ".cache" / "lorakit"))  # the converted SmolLM2, once
    model = resolve_model("smollm2-135m").path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft.yaml").write_text(f"""\
model_name_or_path: {model}
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
dataset: alpaca_en_demo
dataset_dir: {PEERS}
template: smollm2
cutoff_len: 256
max_samples: 16
output_dir: '{{output_dir}}'
logging_steps: 1
max_steps: 4
per_device_train_batch_size: 2
learning_rate: 1.0e-4
plot_loss: true
overwrite_output_dir: true
report_to: none
resume_from_checkpoint: null
""")
    (tmp_path / "llamafactory.yaml").write_text(
        f"command: '{CLI} train {{config}}'\nconfig: sft.yaml\nname: 'smol-sft-s{{steps}}'\nsteps_key: max_steps\n"
        "packages: [llamafactory]\n")
    result = CliRunner().invoke(cli, ["run", "llamafactory.yaml"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "smol-sft-s4-v001"
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "completed" and m["trainer_python"]["virtualenv"]
    # The console script's #! names the virtualenv's python or python3 (the virtualenv's choice): the same program.
    executable = Path(m["trainer_python"]["executable"])
    assert executable.parent == Path(CLI).parent and executable.resolve() == (Path(CLI).parent / "python").resolve()
    assert {"llamafactory", "torch", "transformers", "peft"} <= set(m["versions"])
    assert "adapter_model.safetensors" in m["models"] and m["metrics"]["train_steps"] == 4
    assert (run / "CARD.md").is_file() and (run / "training_loss.png").is_file()
    print(json.dumps({k: m[k] for k in ("command", "versions", "trainer_python", "attempts", "metrics", "models")},
                     indent=2))
