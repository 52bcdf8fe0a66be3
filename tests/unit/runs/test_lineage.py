"""Continued training: compatibility checks, the recorded parent, and `lorakit runs lineage`."""

import json
import shutil

from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.unit.cli.test_train import invoke, make_config


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_parent_is_recorded_and_lineage_walks_the_chain(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 2})
    assert invoke("train", config).exit_code == 0
    runs = tmp_path / "runs"
    assert invoke("train", config, "--set", f"lora.init_from={runs / 'tiny-v001'}").exit_code == 0
    assert invoke("train", config, "--set", "lora.init_from=runs/tiny-v002").exit_code == 0
    manifest = json.loads((runs / "tiny-v003" / "manifest.json").read_text())
    assert manifest["parent"]["name"] == "tiny-v002" and manifest["parent"]["run"] == "tiny-v002"
    assert len(manifest["parent"]["adapter_sha256"]) == 64
    assert "Continued from `tiny-v002`" in (runs / "tiny-v003" / "README.md").read_text()

    result = run("runs", "lineage", "tiny-v003")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    names = [line.split()[1] if line.lstrip().startswith("<-") else line.split()[0]
             for line in lines if "[completed]" in line]
    assert names == ["tiny-v003", "tiny-v002", "tiny-v001"]
    data_hash = next(iter(manifest["data_files"].values()))[:12]
    assert result.output.count(f"sha256 {data_hash}") == 3
    assert "steps 2, train_loss" in result.output


def test_a_different_base_model_is_refused_saying_what_differs(tmp_path, tiny_model_dir):
    config = make_config(tmp_path, tiny_model_dir, train={"max_steps": 1})
    assert invoke("train", config).exit_code == 0
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other)
    result = run("train", config, "--set", f"model.name_or_path={other}",
                 "--set", "lora.init_from=runs/tiny-v001")
    assert result.exit_code == 1
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("error: lora.init_from: tiny-v001 was trained on ")
    assert str(tiny_model_dir.resolve()) in error and str(other.resolve()) in error
    assert "Traceback" not in result.output


def test_a_plain_adapter_whose_tensors_do_not_fit_is_refused(tmp_path, tiny_model_dir):
    from tests.conftest import build_model, build_tokenizer

    wide = tmp_path / "wide-base"
    model = build_model("gemma3")
    model.save_pretrained(wide)
    build_tokenizer().save_pretrained(wide)
    config = make_config(tmp_path, wide, train={"max_steps": 1})
    assert invoke("train", config).exit_code == 0
    adapter = tmp_path / "plain-adapter"  # no manifest: a PEFT folder from elsewhere
    adapter.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(tmp_path / "runs" / "tiny-v001" / name, adapter / name)
    settings = json.loads((adapter / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = str(tiny_model_dir)  # claims the llama base, holds gemma shapes
    (adapter / "adapter_config.json").write_text(json.dumps(settings))
    result = run("train", make_config(tmp_path, tiny_model_dir, train={"max_steps": 1}),
                 "--set", f"lora.init_from={adapter}")
    assert result.exit_code == 1
    assert "does not fit this base model" in result.output and "size mismatch" in result.output
