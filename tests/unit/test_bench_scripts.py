"""The benches in bench/ still reach what they import from lorakit.

docs/benchmarks.md gives a bench's command beside every figure; a rename in lorakit that a bench missed only
shows when someone reruns it (``bench/eval_speed.py`` imported a helper renamed a stop earlier). Running the
benches takes minutes each, so this reads them instead: every ``from lorakit... import name``, at any depth of
the file, names a module that imports and an attribute it has.
"""

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def lorakit_imports(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lorakit"
            for alias in node.names]


@pytest.mark.parametrize("bench", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_every_lorakit_name_a_bench_imports_exists(bench):
    missing = []
    for module, name in lorakit_imports(bench):
        imported = importlib.import_module(module)
        if not hasattr(imported, name):
            try:  # a submodule named in ``from package import module``
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{bench.name} imports names lorakit no longer has: {', '.join(missing)}"


def test_the_reader_sees_imports_inside_functions(tmp_path):
    script = tmp_path / "b.py"
    script.write_text("import os\nfrom lorakit.infer import evaluate\n\ndef f():\n"
                      "    from lorakit.infer.evaluate import load_cases, not_there\n")
    assert lorakit_imports(script) == [("lorakit.infer", "evaluate"), ("lorakit.infer.evaluate", "load_cases"),
                                       ("lorakit.infer.evaluate", "not_there")]
