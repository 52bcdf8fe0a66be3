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


def test_hub_ids_pass_through_with_their_revision():
    resolved = resolve_model("org/model", revision="abc")
    assert resolved.path == "org/model" and resolved.identity["revision"] == "abc"


def test_builtin_model_without_its_package_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    for name, builtin in BUILTIN_MODELS.items():
        with pytest.raises(ModelError, match="install it with: " + builtin.install.split()[0]):
            resolve_model(name)


def test_cache_root_follows_lorakit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" / "models"
