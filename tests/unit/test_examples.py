"""Every config shipped in examples/ validates against the schema, and its data files exist."""

from pathlib import Path

import pytest

from lorakit.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("config", sorted(EXAMPLES.rglob("config*.yaml")) + sorted(EXAMPLES.rglob("*.toml")),
                         ids=lambda p: str(p.relative_to(EXAMPLES)))
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
