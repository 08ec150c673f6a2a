"""`make gpu-check` works before a GPU is at hand: its dry run does every step on the CPU at toy sizes.

A GPU is lent rarely and briefly; a script that fails on a typo there wastes the loan. The dry run
goes through the same steps, commands and report as the real one (the kernel tests skip, the triton
rows of the benchmarks say they need CUDA, the study trains on the torch backend).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = ("environment", "resources", "kernel-tests", "bench-goal", "precision", "study", "bench-sweep")


def test_every_step_of_the_gpu_check_runs_in_its_dry_run(tmp_path):
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(tmp_path), "PYTHON": sys.executable, "JOBS": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TRITON_INTERPRET", None)  # the script's own processes decide
    proc = subprocess.run(["bash", str(REPO / "tests" / "gpu_check.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    report = (tmp_path / "gpu-report.md").read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + report[-3000:]
    for name in STEPS:
        assert re.search(rf"^## {name}: exit 0 after \d+ s", report, re.M), f"{name} missing or failed:\n{report}"
    assert "study ok: 1 trials" in report  # steered once, pruned, replayed
    assert "| 64 | 2^8 | torch |" in report  # the benchmark's table reached the report
    assert (tmp_path / "kernels-bench-goal.json").exists() and (tmp_path / "precision.json").exists()
    assert "| 64 | 3 | relu | none | tf32 | train_step |" in report  # this Triton's spills, in the report


def test_the_gpu_check_ends_within_15_minutes_whatever_its_steps_do():
    """The issue's bound, and a lent GPU's: each step's time limit is in the script; they must add up."""
    script = (REPO / "tests" / "gpu_check.sh").read_text()
    limits = dict(re.findall(r"^(?:\w+=\w+ )?step ([\w-]+) (\d+) ", script, re.M))
    assert set(limits) == set(STEPS) | {"trainer-step"}, limits
    kill_after = int(re.search(r"timeout --kill-after=(\d+) ", script).group(1))  # a step that ignores SIGTERM
    assert sum(int(limit) + kill_after for limit in limits.values()) <= 15 * 60 - 10, limits  # 10 s: set-up, report
