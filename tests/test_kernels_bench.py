"""The benchmark's functions on a tiny CPU run: rows, table, plot (no timing is checked)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from steer.kernels import bench


@pytest.fixture(scope="module")
def rows():
    return bench.run_benchmark(points=(64, 100), widths=(16,), hidden_layers=1,
                               backends=("torch", "triton", "triton-step:bf16"),
                               steps=2, warmup=1, device="cpu")


def test_rows(rows):
    assert [(r["backend"], r["precision"], r["points"], r["status"]) for r in rows] == [
        ("torch", None, 64, "ok"), ("triton", "tf32", 64, "skipped"), ("triton-step", "bf16", 64, "skipped"),
        ("torch", None, 100, "ok"), ("triton", "tf32", 100, "skipped"), ("triton-step", "bf16", 100, "skipped")]
    timed = rows[0]
    assert timed["ms_per_step"] > 0 and timed["first_step_s"] > 0 and timed["width"] == 16
    assert "needs a CUDA device" in rows[1]["note"]
    json.dumps(rows)  # what --json writes


def test_markdown_table(rows):
    table = bench.markdown_table(rows).splitlines()
    assert table[0].startswith("| width | points | backend | ms / step")
    assert len(table) == 2 + len(rows)
    assert "| 16 | 2^6 | torch |" in table[2] and "1.00x" in table[2]
    assert "skipped: triton needs a CUDA device" in table[3]


def test_save_plot(rows, tmp_path):
    if importlib.util.find_spec("matplotlib") is None:
        assert bench.save_plot(rows, tmp_path / "plot.png") is None
        return
    path = bench.save_plot(rows, tmp_path / "sub" / "plot.png", title="test")
    assert path.exists() and path.stat().st_size > 1000


def test_environment_names_the_machine():
    env = bench.environment("cpu")
    assert env["device"].startswith("CPU: ") and env["torch"]
