import ast
import os
import subprocess
import sys

import pytest

from lorakit.errors import ModelError
from lorakit.model.resolve import BUILTIN_MODELS, cache_root, resolve_model


def test_local_folder_resolves_to_itself(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.path == str(tiny_model_dir) and resolved.identity["source"] == "local"


@pytest.mark.parametrize("name", ["./missing", "/no/such/dir", "missing.gguf", "a/b/c"])
def test_missing_paths_are_clear_errors(name):
    with pytest.raises(ModelError, match=r"model\.name_or_path"):
        resolve_model(name)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelError, match=r"without config\.json"):
        resolve_model(str(tmp_path))


def resolve_offline(tmp_path, name: str) -> subprocess.CompletedProcess:
    # huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when imported: a fresh process, never the network
    code = f"from lorakit.model.resolve import resolve_model; print(resolve_model({name!r}, 'main').identity)"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_cached_hub_model_resolves_to_its_commit_without_the_network(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--model"  # the Hugging Face cache's own layout
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    done = resolve_offline(tmp_path, "org/model")
    assert done.returncode == 0, done.stderr
    assert ast.literal_eval(done.stdout.strip()) == {"name": "org/model", "source": "hub", "revision": "main",
                                                     "commit": commit}


def test_a_hub_model_neither_cached_nor_reachable_is_one_line_at_once(tmp_path):
    done = resolve_offline(tmp_path, "org/missing")
    assert done.returncode == 1 and "Traceback" in done.stderr  # raised as a ModelError: the CLI prints it as one line
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("lorakit.errors.ModelError: model.name_or_path: org/missing is not in this machine's "
                           "Hugging Face cache and the hub cannot be reached (OfflineModeIsEnabled")
    assert line.endswith("download it where there is a network (hf download org/missing) and copy the cache "
                         "here, or give a local folder")


def test_a_hub_model_that_is_built_in_as_a_gguf_points_at_it_when_the_hub_is_out_of_reach(tmp_path):
    done = resolve_offline(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct")
    line = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and line.startswith("lorakit.errors.ModelError: model.name_or_path: HuggingFaceTB/")
    assert line.endswith("or give a local folder, or model.name_or_path: smollm2-135m (built in: a 4-bit GGUF of "
                         "it, de-quantised; close to the hub's weights, not equal)")


def test_builtin_model_without_its_package_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    for name, builtin in BUILTIN_MODELS.items():
        with pytest.raises(ModelError, match="install it with: " + builtin.install.split()[0]):
            resolve_model(name)


def test_cache_root_follows_lorakit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" / "models"
