"""bench/gpu_check.sh rehearsed on the CPU (tiny shapes): the script a GPU machine runs once still works."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_rehearses_on_the_cpu(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu"], cwd=tmp_path,
                          env={**__import__("os").environ, "OUT": str(tmp_path)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    table = (tmp_path / "gpu_check.md").read_text()
    for check in ("speed smollm2-135m", "speed gemma-3-270m", "qlora nf4", "oom ladder", "planner mb 8 ckpt"):
        assert f"| {check} |" in table, table
    assert "FAILED" not in table
    assert "effective batch" in table and " kept" in table  # the ladder recovered with the batch kept
