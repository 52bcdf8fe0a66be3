"""Every config shipped in examples/ validates against the schema, and its data files exist."""

from pathlib import Path

import pytest

from lorakit.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


TRAINERS = EXAMPLES / "trainers"  # external trainers' files: their own formats, not lorakit configs
LORAKIT_CONFIGS = [p for p in sorted(EXAMPLES.rglob("config*.yaml")) + sorted(EXAMPLES.rglob("*.toml"))
                   if TRAINERS not in p.parents]


@pytest.mark.parametrize("config", LORAKIT_CONFIGS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_shipped_config_is_valid(config):
    cfg = load_config(config).config
    for path in [*cfg.data.train, *cfg.data.eval]:
        assert Path(path).is_file(), path


def test_quickstart_data_is_large_enough_and_never_contains_evaluation_formulas():
    import json

    typst = EXAMPLES / "typst"
    train = [json.loads(line) for line in (typst / "train.jsonl").open()]
    val = [json.loads(line) for line in (typst / "val.jsonl").open()]
    assert len(train) >= 400 and len(val) >= 50
    held_out = Path(__file__).resolve().parents[3] / "shared" / "data" / "typst" / "real_math_dev.jsonl"
    if not held_out.is_file():
        pytest.skip(f"{held_out} is not beside this checkout")
    evaluation = {json.loads(line)["tex"].strip() for line in held_out.open()}
    ours = {r["prompt"][0]["content"].split("\n", 1)[1].strip() for r in train + val}
    assert not ours & evaluation


def load_make_data(monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("make_data", EXAMPLES / "typst" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_data", make_data)
    monkeypatch.syspath_prepend(str(EXAMPLES / "typst"))  # its sibling grammar.py
    monkeypatch.delitem(sys.modules, "grammar", raising=False)
    spec.loader.exec_module(make_data)
    return make_data


def quickstart_pairs() -> list[tuple[str, str]]:
    import json

    rows = [json.loads(line) for name in ("train.jsonl", "val.jsonl") for line in (EXAMPLES / "typst" / name).open()]
    return [(r["prompt"][0]["content"].split("\n", 1)[1], r["completion"][0]["content"]) for r in rows]


def test_every_quickstart_label_is_what_tex2typst_writes_and_compiles(monkeypatch):
    from lorakit.infer.metrics import typst_math_compiles

    make_data = load_make_data(monkeypatch)
    pairs = quickstart_pairs()
    try:
        converted = make_data.tex2typst([tex for tex, _ in pairs])
    except make_data.LabelError as e:
        pytest.skip(str(e))  # .ci/run installs it
    wrong = [(tex, label, typst) for (tex, label), typst in zip(pairs, converted, strict=True) if label != typst]
    assert not wrong, wrong[:3]
    broken = [label for _, label in pairs if not typst_math_compiles(label)]
    assert not broken, broken[:3]


def test_the_generator_covers_what_books_write(monkeypatch):
    import random

    make_data = load_make_data(monkeypatch)
    rng = random.Random(3)
    formulas = [make_data.formula(rng) for _ in range(3000)]
    # The constructs issue 31 names, and the ones the miss table showed (arrays, line breaks, limits).
    constructs = ["\\left", "\\bigl", "\\text{", "\\hat", "\\bar", "\\sqrt", "\\frac", "\\epsilon", "\\star",
                  "\\,", "\\;", "\\quad", "\\qquad", "\\cdots", "\\ldots", "\\pm", "\\times", "\\infty", "\\sum_",
                  "\\int_", "\\lim_", "\\begin{cases}", "\\begin{array}", "\\\\", "&=&", "\\dfrac", "\\tfrac"]
    missing = [c for c in constructs if not any(c in f for f in formulas)]
    assert not missing
    # in the contexts books use them: inside fractions, scripts and sums
    assert any("\\frac{" in f and "\\sqrt" in f.split("\\frac{", 1)[1][:40] for f in formulas)
    assert any("^{" in f and "\\frac" in f.split("^{", 1)[1][:30] for f in formulas)
    assert any(f.startswith("\\sum_") and "\\frac" in f for f in formulas)


def test_the_generator_labels_with_tex2typst_and_keeps_only_compiling_labels(monkeypatch):
    make_data = load_make_data(monkeypatch)
    calls = []

    def fake_tex2typst(formulas):
        calls.append(len(formulas))
        # the first formula is refused; two labels in three do not compile
        return [None if i == 0 else ("x" if i % 3 == 1 else "#nonsense") for i in range(len(formulas))]

    monkeypatch.setattr(make_data, "tex2typst", fake_tex2typst)
    pairs = make_data.generate(20, seed=1)
    assert len(pairs) == 20 and all(typst == "x" for _, typst in pairs)
    assert len(calls) >= 2  # refused and broken formulas were replaced by new ones
    assert len({tex for tex, _ in pairs}) == 20


def test_without_tex2typst_the_generator_stops_with_one_line(monkeypatch, tmp_path):
    import subprocess
    import sys

    env = {"PATH": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, str(EXAMPLES / "typst" / "make_data.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: tex2typst is not installed: run `npm ci --prefix examples/typst` "
                                   "(needs Node 18+)")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("trainer", sorted(TRAINERS.glob("*/trainer.*")), ids=lambda p: p.parent.name)
def test_shipped_trainer_files_load_and_their_configs_render(trainer, tmp_path):
    from lorakit.external.render import dump_config, render_config
    from lorakit.external.trainer import load_trainer_file

    spec = load_trainer_file(trainer)
    assert spec.config and all(Path(p).is_file() for p in [spec.config, *spec.oom_ladder, *spec.copy_files])
    values = {"dataset": "/data/cats", "output_dir": str(tmp_path), "output_name": "cats-v1s1600"}
    config = render_config(Path(spec.config), [Path(p) for p in spec.oom_ladder], [], values)
    assert "{output_dir}" not in dump_config(config, Path(spec.config).suffix.lstrip(".").replace("yml", "yaml"))
    assert config[spec.steps_key] > 0


def test_the_miss_table_counts_constructs_misses_and_space_only_misses():
    import importlib.util

    spec = importlib.util.spec_from_file_location("misses", EXAMPLES / "typst" / "misses.py")
    misses = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(misses)
    assert misses.constructs(r"\frac{a}{b}^2 + \begin{cases} x \\ y \end{cases}") == {
        r"\frac", "superscript ^", r"\begin{cases}", "line break \\\\"}
    inputs = [r"\frac{a}{b}", r"\frac{1}{x}", r"\sqrt{x}", "x^2"]
    references = ["a/b", "1/x", "sqrt(x)", "x^2"]
    answers = ["a / b", "1 x", "sqrt(x)", "x^2"]  # a space-only miss, a real miss, two right
    table = misses.miss_table(inputs, references, answers, top=10)
    assert table.splitlines()[0] == "4 cases, 2 missed (50.0%); 1 of the misses differ only in spaces"
    assert "| `\\frac` | 2 | 50.0% | 2 | 100% | 1 |" in table
    assert "sqrt" not in table and "superscript" not in table  # never missed: not listed


def test_the_dpo_stage_continues_the_quickstart_on_pairs_mined_from_its_training_data():
    import json

    from lorakit.data.dataset import load_conversations

    typst = EXAMPLES / "typst"
    cfg = load_config(typst / "dpo.yaml").config
    quickstart = load_config(typst / "config.yaml").config
    assert cfg.train.method == "dpo" and (cfg.lora.r, cfg.lora.alpha) == (quickstart.lora.r, quickstart.lora.alpha)
    # the quickstart's run folder when both are trained from the repository's root
    assert Path(cfg.lora.init_from).resolve() == (EXAMPLES.parent / "runs" / f"{quickstart.output.name}-v001")
    labels = {r["prompt"][0]["content"]: r["completion"][0]["content"]
              for r in map(json.loads, (typst / "train.jsonl").open())}
    pairs = load_conversations(cfg.data.train, cfg.data, pairs=True)
    assert len(pairs) >= 300
    for pair in pairs:
        prompt = pair.turns[0].content
        assert pair.turns[-1].content == labels[prompt]  # chosen: the training label of that prompt
        assert pair.rejected[-1].content != labels[prompt]  # rejected: the adapter's other answer
