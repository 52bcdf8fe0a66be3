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


def test_quickstart_generator_labels_compile_as_typst(monkeypatch):
    import importlib.util
    import sys

    from lorakit.infer.metrics import typst_math_compiles

    spec = importlib.util.spec_from_file_location("make_data", EXAMPLES / "typst" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_data", make_data)  # dataclasses look their module up
    spec.loader.exec_module(make_data)
    formulas = make_data.generate(300, seed=7)
    broken = [m.typst for m in formulas if not typst_math_compiles(m.typst)]
    assert not broken, broken[:5]


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
