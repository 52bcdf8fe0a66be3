"""lorakit export --gguf on tiny trained runs of each architecture: the file answers as the adapter does."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lorakit.cli.main import cli
from tests.conftest import build_bpe_tokenizer, write_jsonl
from tests.unit.cli.test_train import invoke, make_config

PREFIX = "translate to typst :\n"
ROWS = [{"prompt": [{"role": "user", "content": PREFIX + tex}], "completion": [{"role": "assistant", "content": ty}]}
        for tex, ty in [("\\ frac x y", "x / y"), ("\\ sqrt x", "sqrt ( x )"), ("x ^ 2 + y", "x ^ 2 + y"),
                        ("\\ alpha + \\ beta", "alpha + beta"), ("\\ sum x", "sum x"), ("y _ 1", "y _ 1")] * 4]
# f16 keeps an 11-bit mantissa: each weight moves by up to 5e-4 of itself, and these tiny models' logits
# (magnitude ~1) move by a few 1e-3; 0.02 leaves room without hiding a wrong layout, which moves them by ~1.
F16_LOGIT_TOLERANCE = 0.02


def tiny_base(kind: str, folder: Path) -> Path:
    """A tiny model of ``kind`` with a byte-level BPE tokenizer, saved as a Hugging Face folder."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_bpe_tokenizer()
    torch.manual_seed(0)
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
           "bos_token_id": tokenizer.bos_token_id, "max_position_embeddings": 256, "initializer_range": 0.2}
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             tie_word_embeddings=False, **ids))
    else:  # llama.cpp's gemma3 layout: 5 sliding layers then a global one, query scale 1/sqrt(head_dim)
        model = Gemma3ForCausalLM(Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                                                   num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                                                   query_pre_attn_scalar=256, sliding_window=16, **ids))
    model.float().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def trained(request, tmp_path_factory) -> Path:
    """A 4-step lorakit run on a tiny base of each architecture; its folder (cwd is reset per test)."""
    root = tmp_path_factory.mktemp(f"gguf-{request.param}")
    base = tiny_base(request.param, root / "base")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("HOME", str(root / "home"))  # module-scoped: conftest's isolation is per test
        patch.setenv("LORAKIT_CACHE", str(root / "cache"))
        config = make_config(root, base, train={"max_steps": 4, "lr": 0.05}, data={"template": "chatml"})
        write_jsonl(root / "train.jsonl", ROWS)
        result = invoke("train", config)
        assert result.exit_code == 0, result.output
    return root / "runs" / "tiny-v001"


def cli_run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def reference_logits(run: Path, ids: list[int]) -> torch.Tensor:
    from lorakit.infer.load import load_adapter

    adapter = load_adapter(str(run), device="cpu")
    with torch.no_grad():
        return adapter.model(torch.tensor([ids])).logits[0]


def test_f16_gguf_loads_in_transformers_and_matches_the_adapter(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "tiny-f16.gguf"
    result = cli_run("export", trained, "--gguf", "--out", out)
    assert result.exit_code == 0, result.output
    ids = build_bpe_tokenizer()(PREFIX + "x ^ 2 + y = alpha")["input_ids"]
    expected = reference_logits(trained, ids)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32)
    with torch.no_grad():
        got = loaded(torch.tensor([ids])).logits[0]
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.99
    torch.testing.assert_close(got, expected, atol=F16_LOGIT_TOLERANCE, rtol=0)


def test_gguf_carries_the_runs_template_prompt_shape_and_provenance(trained, tmp_path):
    from lorakit.infer.export.gguf_model import read_lorakit_fields

    out = tmp_path / "tiny.gguf"
    assert cli_run("export", trained, "--gguf", "--out", out).exit_code == 0
    fields = read_lorakit_fields(out)
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    assert fields["lorakit.prompt_shape"]["prefix"] == PREFIX
    assert fields["lorakit.run"] == "tiny-v001" and fields["general.name"] == "tiny-v001"
    assert fields["general.base_model.0.name"].endswith("base") and fields["lorakit.version"]
    modelfile = out.with_suffix(".Modelfile").read_text()
    assert modelfile.startswith("FROM ./tiny.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>{{ .Role }}" in modelfile and "translate to typst :\n{{ .Content }}" in modelfile


def test_q8_0_is_smaller_and_still_agrees(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    f16, q8 = tmp_path / "f16.gguf", tmp_path / "q8.gguf"
    assert cli_run("export", trained, "--gguf", "--out", f16).exit_code == 0
    assert cli_run("export", trained, "--gguf", "--quant", "q8_0", "--out", q8).exit_code == 0
    assert q8.stat().st_size < 0.8 * f16.stat().st_size
    ids = build_bpe_tokenizer()(PREFIX + "\\ sqrt x + beta")["input_ids"]
    expected = reference_logits(trained, ids)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=q8.name, dtype=torch.float32)
    with torch.no_grad():
        got = loaded(torch.tensor([ids])).logits[0]
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9  # 8-bit blocks: near-ties may flip


def test_bad_requests_are_one_line_and_write_nothing(trained, tmp_path, monkeypatch):
    out = tmp_path / "x.gguf"
    out.write_text("someone's file")
    cases = {
        ("--gguf", "--quant", "q3_k"): "--quant q3_k: no such quantisation; choose from f16, q8_0, q4_k_m",
        ("--gguf", "--out", out): f"--out {out} exists; choose another file or add --force to replace it",
        ("--merge", "--gguf"): "export: give exactly one of --merge (a model folder) or --gguf (a llama.cpp file)",
    }
    for args, message in cases.items():
        result = cli_run("export", trained, *args)
        assert result.exit_code in (1, 2) and result.output.strip() == f"error: {message}", result.output
    assert out.read_text() == "someone's file"
    assert not list(tmp_path.glob(".x.gguf.partial-*"))


def test_out_naming_a_folder_puts_the_file_into_it_and_force_replaces_only_that_file(trained, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    first = cli_run("export", trained, "--gguf", "--out", folder)
    assert first.exit_code == 0, first.output
    target = folder / "tiny-v001-f16.gguf"
    assert target.is_file() and f"wrote {target}" in first.output
    again = cli_run("export", trained, "--gguf", "--out", folder)
    assert again.exit_code == 1 and again.output.strip() == (
        f"error: {target} exists; add --force to replace it, or --out for another file")
    forced = cli_run("export", trained, "--gguf", "--out", folder, "--force")
    assert forced.exit_code == 0, forced.output  # no IsADirectoryError: the file in the folder is replaced
    assert folder.is_dir() and target.is_file()


def test_a_tokenizer_without_a_decoder_is_one_line(trained, tmp_path):
    from lorakit.errors import ModelError
    from lorakit.infer.export.vocab import build_tokenizer

    folder = tmp_path / "tok"
    build_bpe_tokenizer().save_pretrained(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["decoder"] = None
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"tokenizer.json: decoder is missing, and a byte-level BPE \(gpt2\)"):
        build_tokenizer(None, folder)  # refused before the gguf package (a TypeError inside it) is reached


def test_q4_k_m_without_llama_cpp_names_the_install_line(trained, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_llama_cpp(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    result = cli_run("export", trained, "--gguf", "--quant", "q4_k_m")
    assert result.exit_code == 1 and "pip install 'lorakit[llamacpp]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    engine = cli_run("infer", trained, "--engine", "llama.cpp", "--input", "-", input="x")
    assert engine.exit_code == 1 and "--engine llama.cpp needs llama-cpp-python" in engine.output


def test_another_architecture_is_named_with_the_supported_ones(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lorakit.errors import ModelError
    from lorakit.infer.export.arch import architecture

    config = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1)).config
    with pytest.raises(ModelError, match=r"architecture 'qwen2' is not supported; supported: llama .* gemma3"):
        architecture(config)


def test_llama3_rope_factors_follow_the_wavelength_bands():
    from types import SimpleNamespace

    from lorakit.infer.export.arch import llama3_rope_factors

    config = SimpleNamespace(hidden_size=2048, num_attention_heads=32, head_dim=64, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    factors = llama3_rope_factors(config)
    assert factors.shape == (32,) and factors[0] == 1.0 and factors[-1] == 32.0  # short waves kept, long divided
    assert np.all(np.diff(factors) >= 0)  # the smooth band in between rises monotonically


def test_card_names_the_base_portably(tmp_path):
    from lorakit.runs.card import base_loading

    builtin = base_loading({"base_model": {"name": "gemma-3-270m", "source": "gguf", "file": "/root/.cache/x.gguf"},
                            "config": {"model": {"name_or_path": "gemma-3-270m"}}})
    assert "resolve_model('gemma-3-270m')" in builtin and ".cache" not in builtin
    hub = base_loading({"base_model": {"name": "TinyLlama/TinyLlama-1.1B", "source": "hub", "revision": "abc123"},
                        "config": {"model": {"name_or_path": "TinyLlama/TinyLlama-1.1B"}}})
    assert hub == "base = AutoModelForCausalLM.from_pretrained('TinyLlama/TinyLlama-1.1B', revision='abc123')"


def check_line(output: str) -> float:
    """The top-1 agreement printed by ``export --check``."""
    line = next(x for x in output.splitlines() if x.startswith("check ("))
    return float(line.split("top-1 identical on ")[1].split("%")[0]) / 100


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_check_runs_the_gguf_in_llama_cpp_and_it_agrees(trained, tmp_path, quant):
    pytest.importorskip("llama_cpp")
    result = cli_run("export", trained, "--gguf", "--quant", quant, "--out", tmp_path / "m.gguf", "--check")
    assert result.exit_code == 0, result.output
    assert "check (llama.cpp," in result.output and result.output.rstrip().endswith(": ok")
    assert check_line(result.output) >= (0.99 if quant == "f16" else 0.95)


def test_the_check_judges_the_positions_where_the_adapters_choice_is_clear():
    from lorakit.infer.export.check import NEAR_TIE, compare

    rng = np.random.default_rng(0)
    expected = (4 * rng.normal(size=(100, 50))).astype(np.float32)  # logits spread as a model's: some ties
    first, second = np.sort(expected, axis=-1)[:, -1], np.sort(expected, axis=-1)[:, -2]
    ties = np.flatnonzero(first - second < NEAR_TIE["q8_0"])
    clear = np.flatnonzero(first - second >= NEAR_TIE["q8_0"])
    assert len(ties) >= 10 and len(clear) >= 50  # the draw has both kinds (seeded)

    def flipped(rows):  # the export's logits: the adapter's runner-up made first at those positions
        got = expected.copy()
        for row in rows:
            got[row, np.argsort(expected[row])[-2]] = first[row] + 0.01
        return got

    near = compare([expected], [flipped(ties)], "llama.cpp", "q8_0")
    assert near.top1_agreement < 0.95 and near.passed  # rounding at near-ties: either token is the adapter's
    broken = compare([expected], [flipped(clear[: len(clear) // 10])], "llama.cpp", "q8_0")
    assert broken.top1_agreement >= 0.90 and not broken.passed  # a tenth of the clear choices changed
    assert "FAILED" in broken.line() and f"of the {len(clear)} where" in broken.line()


def test_q4_k_m_comes_from_llama_cpps_quantiser(trained, tmp_path):
    pytest.importorskip("llama_cpp")
    import gguf

    result = cli_run("export", trained, "--gguf", "--quant", "q4_k_m", "--out", tmp_path / "q4.gguf")
    assert result.exit_code == 0, result.output
    kinds = {t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "q4.gguf").tensors}
    assert kinds & {"Q4_K", "Q5_0", "Q5_1", "Q6_K", "Q8_0", "Q4_0", "Q5_K"}, kinds  # quantised, whatever mix fits
    assert not list(tmp_path.glob("*.f16"))  # the intermediate f16 file is gone


def test_adapter_only_gguf_on_the_shared_base_matches_and_refuses_another_base(trained, tmp_path):
    pytest.importorskip("llama_cpp")
    out = tmp_path / "ship" / "tiny-lora.gguf"
    result = cli_run("export", trained, "--gguf", "--adapter-only", "--out", out, "--check")
    assert result.exit_code == 0, result.output
    assert check_line(result.output) >= 0.99
    base = next(p for p in out.parent.glob("*-f16.gguf"))
    modelfile = out.with_suffix(".Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{base.name}\nADAPTER ./tiny-lora.gguf\n")
    again = cli_run("export", trained, "--gguf", "--adapter-only", "--out", out.parent / "second-lora.gguf")
    assert again.exit_code == 0 and f"wrote {base}" in again.output  # the base is shared, not rewritten

    from transformers import AutoModelForCausalLM

    from lorakit.infer.export.arch import architecture
    from lorakit.infer.export.gguf_model import GgufMetadata, write_model_gguf

    other_base = tiny_base("gemma3" if "gemma3" in str(trained) else "llama", tmp_path / "other")
    model = AutoModelForCausalLM.from_pretrained(other_base)
    wrong = tmp_path / "wrong-base.gguf"
    write_model_gguf(wrong, model.state_dict(), model.config, architecture(model.config),
                     GgufMetadata("other", "other", None, other_base, extra={"base_id": "0" * 16}))
    (tmp_path / "in.jsonl").write_text('{"input": "x ^ 2"}\n')
    refused = cli_run("infer", wrong, "--engine", "llama.cpp", "--lora", out, "--input", tmp_path / "in.jsonl")
    assert refused.exit_code == 1 and "was trained on" in refused.output and "not on wrong-base.gguf" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_llama_cpp_engine_answers_as_the_transformers_engine(trained, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    monkeypatch.chdir(trained.parent.parent)
    cases = [{"input": tex} for tex in ("\\ frac x y", "x ^ 2 + y", "\\ sum x", "y _ 1", "\\ alpha + \\ beta")]
    write_jsonl(tmp_path / "in.jsonl", cases)
    answers = {}
    for engine in ("transformers", "llama.cpp"):
        out = tmp_path / f"{engine}.jsonl"
        result = cli_run("infer", "tiny-v001", "--engine", engine, "--input", tmp_path / "in.jsonl",
                         "--output", out, "--max-new-tokens", 12)
        assert result.exit_code == 0, result.output
        answers[engine] = [json.loads(x)["output"] for x in out.read_text().splitlines()]
    # Greedy decoding on the same token ids: an f16 rounding can flip a near-tie and change the rest of one
    # answer, so 4 of 5 must be identical rather than all.
    same = sum(a == b for a, b in zip(answers["transformers"], answers["llama.cpp"], strict=True))
    assert same >= 4, answers
    exported = trained / "gguf" / "tiny-v001-f16.gguf"
    assert exported.is_file()  # exported once, reused by the next call

    # The GGUF alone, far from its run: tokenizer, template and prompt wording come from its own fields.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / exported.name).write_bytes(exported.read_bytes())
    monkeypatch.chdir(elsewhere)
    alone = cli_run("infer", exported.name, "--engine", "llama.cpp", "--input", tmp_path / "in.jsonl",
                    "--output", "alone.jsonl", "--max-new-tokens", 12)
    assert alone.exit_code == 0, alone.output
    assert [json.loads(x)["output"] for x in (elsewhere / "alone.jsonl").read_text().splitlines()] == \
        answers["llama.cpp"]


def test_eval_on_llama_cpp_is_recorded_beside_the_transformers_figures(trained, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    monkeypatch.chdir(trained.parent.parent)
    write_jsonl(tmp_path / "dev.jsonl", [{"input": PREFIX + "x ^ 2", "output": "x ^ 2"}] * 3)
    for engine in ("transformers", "llama.cpp"):
        result = cli_run("eval", "tiny-v001", "--data", tmp_path / "dev.jsonl", "--metrics", "exact,chrf",
                         "--engine", engine)
        assert result.exit_code == 0, result.output
    recorded = json.loads((trained / "eval_results.json").read_text())
    assert {"eval_dev", "eval_dev.llamacpp"} <= set(recorded)
    loss = cli_run("eval", "tiny-v001", "--data", tmp_path / "dev.jsonl", "--metrics", "loss", "--engine", "llama.cpp")
    assert loss.exit_code == 1 and "loss and --base need --engine transformers" in loss.output


def test_a_gguf_base_is_converted_reading_its_file_once(trained, tmp_path, monkeypatch):
    # transformers opens a GGUF for the tokenizer, the config and the weights; lorakit's conversion serves the three
    # from one reader (each one builds a view of every vocabulary string: 18 s apiece on Gemma-3)
    import gguf
    from transformers import AutoModelForCausalLM

    from lorakit.model.resolve import resolve_model

    out = tmp_path / "merged-f16.gguf"
    assert cli_run("export", trained, "--gguf", "--out", out).exit_code == 0
    original, opened = gguf.GGUFReader, []

    class CountingReader(original):
        def __init__(self, path, *args, **kwargs):
            opened.append(Path(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "cache"))
    converted = resolve_model(str(out))
    assert opened == [out] and gguf.GGUFReader is CountingReader  # one reader, and the class put back after
    ids = torch.tensor([build_bpe_tokenizer()(PREFIX + "x ^ 2")["input_ids"]])
    direct = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32)
    cached = AutoModelForCausalLM.from_pretrained(converted.path, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, direct(ids).logits)  # the same weights as transformers' own reading
