"""The kernels compile for an NVIDIA H100/H200 (sm_90) on a machine without a GPU, and do not spill.

Triton's interpreter runs the kernels as Python, so it misses what only the compiler
rejects (a global that is not a constexpr, a constexpr reassigned, branches whose
values differ in type). Triton ships ptxas, so every kernel can be compiled ahead of
time down to a cubin without a GPU, and ptxas -v says what a thread uses
(`steer.kernels.resources`). That runs in a subprocess: the kernels module must be
imported without TRITON_INTERPRET, which test_kernels.py sets in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from steer.kernels import DEFAULT_PRECISION
from steer.kernels.fused import STEP_MAX_SPILL_BYTES, triton_importable

pytestmark = pytest.mark.skipif(not triton_importable(), reason="needs triton")

RESOURCES_SCRIPT = textwrap.dedent('''
    import json, sys
    from steer.kernels.reference import MLPConfig
    from steer.kernels.resources import kernel_resources

    rows = []
    for case in json.loads(sys.argv[1]):
        precision = case.pop("precision")
        rows += kernel_resources(MLPConfig(**case), precision)
    print(json.dumps(rows))
''')


def compile_for_sm90(cases: list[dict]) -> list[dict]:
    """kernel_resources rows for each case (a dict of MLPConfig fields plus "precision")."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence 3.9's warning; fusion is the old default
    proc = subprocess.run([sys.executable, "-c", RESOURCES_SCRIPT, json.dumps(cases)], env=env,
                          capture_output=True, text=True, timeout=900)
    last_line = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    if proc.returncode != 0 and ("Cannot find ptxas" in last_line or
                                 ("ImportError" in last_line and "triton" in last_line)):
        pytest.skip(f"no NVIDIA toolchain or compile API in this triton: {last_line}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_kernel_compiles_for_sm90_at_every_precision():
    cases = [
        dict(width=64, hidden_layers=3, activation="relu", encoding="none", output="sigmoid", precision="tf32"),
        dict(width=32, hidden_layers=2, activation="sine", encoding="fourier", fourier_features=5, output="linear",
             precision="bf16"),
        dict(width=16, hidden_layers=1, activation="sine", encoding="fourier", output="sigmoid", precision="fp32"),
        dict(width=128, hidden_layers=2, activation="relu", encoding="fourier", output="linear",
             precision="tf32x3"),
    ]
    rows = compile_for_sm90(cases)
    # five split kernels each; the one-kernel step where it takes the net (the first two)
    assert [r["kernel"] for r in rows].count("train_step") == 2 and len(rows) == 5 * len(cases) + 2
    assert all(r["cubin_bytes"] > 0 and r["registers"] > 0 for r in rows), rows


def test_the_default_precision_does_not_spill_up_to_width_64():
    """A kernel that spills keeps state in local memory, far slower than its arithmetic; under
    Triton 3.6 the one kernel that failed on an H200 (an illegal address, tf32x3 forward at
    width 64 with Fourier features) was also the one forward kernel that spilled."""
    cases = [dict(width=w, hidden_layers=4, activation=act, encoding=enc, precision=DEFAULT_PRECISION)
             for w in (16, 32, 64) for act, enc in (("relu", "none"), ("sine", "fourier"))]
    # the split kernels with 32 Fourier features at width 32 (their first-layer gradient spilled 1.1 KB)
    cases += [dict(width=32, hidden_layers=2, activation="relu", encoding="fourier", fourier_features=32,
                   precision=DEFAULT_PRECISION)]
    # and the one-kernel step at the deepest net it takes at each width, with its most Fourier features
    cases += [dict(width=16, hidden_layers=2, activation="sine", encoding="fourier", fourier_features=32,
                   precision=DEFAULT_PRECISION),
              dict(width=32, hidden_layers=2, activation="sine", encoding="none", precision=DEFAULT_PRECISION),
              dict(width=64, hidden_layers=4, activation="relu", encoding="fourier", fourier_features=32,
                   precision=DEFAULT_PRECISION),
              dict(width=64, hidden_layers=3, activation="sine", encoding="fourier", fourier_features=32,
                   precision=DEFAULT_PRECISION)]
    rows = compile_for_sm90(cases)
    assert [r["kernel"] for r in rows].count("train_step") == 7  # 16/4 relu; 64/4 both; and these four
    spilling = [f"{r['kernel']} at width {r['width']}, {r['activation']}, {r['encoding']}: "
                f"{r['spill_stores']} B stored, {r['spill_loads']} B loaded"
                for r in rows if r["spill_stores"] or r["spill_loads"]]
    assert not spilling, f"{DEFAULT_PRECISION} spills: " + "; ".join(spilling)


STEP_REASON_SCRIPT = textwrap.dedent('''
    import json, sys
    from steer.kernels.fused import KernelPlan, _compiled_step_reason
    from steer.kernels.reference import MLPConfig

    out = []
    for case in json.loads(sys.argv[1]):
        precision, loss, capability = case.pop("precision"), case.pop("loss"), tuple(case.pop("capability"))
        limit = case.pop("shared_limit")
        out.append(_compiled_step_reason(KernelPlan.from_config(MLPConfig(**case), precision), loss, capability,
                                         limit))
    print(json.dumps(out))
''')
H200_SHARED = 232448  # bytes a block may use on an H100 or H200 (what Triton checked there at launch)


def test_a_gpu_trains_with_the_one_kernel_step_wherever_its_triton_can_launch_it():
    """What `FusedCoordMLP.step_unsupported_reason` asks on a GPU (compiled here for that GPU's arch):
    a step that spills a little still trains (measured faster than the split kernels on an H200); one
    that spills kilobytes (slower there), or needs more shared memory than the GPU has (it would fail
    at launch), trains with the split kernels."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    spiller = dict(width=16, hidden_layers=1, activation="sine", encoding="fourier", precision="bf16", loss="mse")
    too_big = dict(width=64, hidden_layers=4, activation="sine", precision="tf32x3", loss="huber")
    cases = [dict(width=64, hidden_layers=3, precision=DEFAULT_PRECISION, loss="mse", capability=[9, 0]),
             dict(spiller, capability=[9, 0]), dict(too_big, capability=[9, 0]),
             dict(width=64, hidden_layers=3, precision=DEFAULT_PRECISION, loss="mse", capability=[8, 0]),
             dict(width=64, hidden_layers=3, encoding="fourier", precision="fp32", loss="huber", capability=[9, 0])]
    for case, limit in zip(cases, (H200_SHARED, H200_SHARED, H200_SHARED, 1024, H200_SHARED)):
        case["shared_limit"] = limit
    proc = subprocess.run([sys.executable, "-c", STEP_REASON_SCRIPT, json.dumps(cases)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and "Cannot find ptxas" in proc.stderr:
        pytest.skip("no NVIDIA toolchain in this triton")
    assert proc.returncode == 0, proc.stderr[-4000:]
    import triton

    fits, spills, too_big_here, small_gpu, spills_kilobytes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert small_gpu is not None and small_gpu.endswith("for sm_80, and this GPU has 1024 B"), small_gpu
    assert small_gpu.startswith("it needs ") and "B of shared memory per block under Triton" in small_gpu, small_gpu
    assert "the split kernels train this net" in proc.stderr
    if triton.__version__.startswith(("3.9", "3.6")):  # the versions these nets were measured with
        assert fits is None and spills is None
        assert spills_kilobytes is not None and spills_kilobytes.startswith("it spills "), spills_kilobytes
        assert spills_kilobytes.endswith(f"under Triton {triton.__version__} for sm_90 (more than "
                                         f"{STEP_MAX_SPILL_BYTES} B, where it was slower than the split kernels)")
        assert int(spills_kilobytes.split()[2]) > STEP_MAX_SPILL_BYTES
        assert too_big_here == (f"it needs 246272 B of shared memory per block under Triton {triton.__version__} "
                                f"for sm_90, and this GPU has {H200_SHARED} B"), too_big_here


def test_a_step_whose_compile_cannot_be_checked_trains_with_the_split_kernels():
    """No ptxas, or a Triton whose compile API moved: the guard says why and the split kernels train."""
    script = textwrap.dedent('''
        import triton
        from steer.kernels.fused import KernelPlan, _compiled_step_reason
        from steer.kernels.reference import MLPConfig

        def broken(*args, **kwargs):
            raise RuntimeError("no compiler here")

        triton.compile = broken
        print(_compiled_step_reason(KernelPlan.from_config(MLPConfig(width=64, hidden_layers=3), "tf32"), "mse",
                                    (9, 0), 232448))
    ''')
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().startswith("its compile for sm_90 could not be checked under Triton "), proc.stdout
    assert proc.stdout.strip().endswith("(no compiler here)")


def test_a_bad_arch_is_one_clear_error():
    proc = subprocess.run([sys.executable, "-m", "steer.kernels.resources", "--arch", "sm90"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--arch: got 'sm90'; allowed: a compute capability such as 80 or 90, or auto" \
        in proc.stderr, proc.stderr
