"""The training core stays readable: every function in train/ and recipe/ under ruff's complexity 12,
run_loop with few parameters, and no import of torch where the plan of a run is made."""

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "lorakit"


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is a dev dependency")
def test_no_function_in_the_training_core_is_over_complexity_12():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    done = subprocess.run([ruff, "check", "--no-cache", "--select", "C901", "--config",
                           "lint.mccabe.max-complexity=12", str(SRC / "train"), str(SRC / "recipe")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_loop_takes_few_parameters():
    from lorakit.train.loop import run_loop, train_step

    assert len(inspect.signature(run_loop).parameters) <= 7
    assert len(inspect.signature(train_step).parameters) <= 7


def test_the_plan_of_a_run_imports_no_torch():
    code = ("import sys; import lorakit.train.plan, lorakit.train.select, lorakit.config.memory; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
