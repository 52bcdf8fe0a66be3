import pytest

from lorakit.errors import ModelError
from lorakit.model.load import load_tokenizer
from lorakit.model.resolve import resolve_model
from tests.conftest import build_tokenizer


def test_missing_pad_token_reuses_eos_without_growing_the_vocabulary(tmp_path, tiny_model_dir):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = build_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    loaded = load_tokenizer(resolve_model(str(folder)))
    assert loaded.pad_token == loaded.eos_token == "<eos>"
    assert len(loaded) == len(tokenizer)


def test_unloadable_tokenizer_is_a_model_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot load the tokenizer"):
        load_tokenizer(resolve_model(str(tmp_path)))


def test_training_model_on_the_cpu_uses_per_example_attention_and_no_cache(tiny_model_dir):
    from lorakit.config.schema import ModelSection
    from lorakit.model.attention import SEGMENTED, uses_segments
    from lorakit.model.load import load_base_model

    model = load_base_model(resolve_model(str(tiny_model_dir)), ModelSection(name_or_path=str(tiny_model_dir)), "cpu")
    assert model.config._attn_implementation == SEGMENTED
    assert uses_segments(model)
    assert model.config.use_cache is False
    assert not any(p.requires_grad for p in model.parameters())


def test_attention_soft_capping_falls_back_to_eager():
    from transformers import Gemma2Config

    from lorakit.model.attention import pick_attention

    assert pick_attention(Gemma2Config(attn_logit_softcapping=50.0), "cpu", __import__("torch").float32) == "eager"


@pytest.mark.parametrize("build", ["build_tokenizer", "build_bpe_tokenizer"])
def test_a_saved_tokenizer_loads_back_the_same_with_its_added_tokens_listed(tmp_path, build):
    """save_tokenizer writes the added tokens into tokenizer_config.json (transformers 5 leaves them out, and a
    load without them parses the whole tokenizer.json again to find them); the tokenizer loaded back encodes
    and decodes every text the same and has the same added and special tokens."""
    import json

    from transformers import AutoTokenizer

    import tests.conftest as fixtures
    from lorakit.model.tokenizer_files import save_tokenizer

    tokenizer = getattr(fixtures, build)()
    save_tokenizer(tokenizer, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert {int(i): t["content"] for i, t in config["added_tokens_decoder"].items()} == {
        i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [" ".join(fixtures.WORDS), "<|im_start|>user\nhello<|im_end|>", "".join(fixtures.SPECIALS) + " x"]
    for text in texts:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert loaded.decode(tokenizer(text)["input_ids"]) == tokenizer.decode(tokenizer(text)["input_ids"])
    assert loaded.added_tokens_decoder == tokenizer.added_tokens_decoder
    assert loaded.all_special_ids == tokenizer.all_special_ids
