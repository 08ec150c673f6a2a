"""The kernels compile for an NVIDIA H100 (sm_90) on a machine without a GPU.

Triton's interpreter runs the kernels as Python, so it misses what only the compiler
rejects (a global that is not a constexpr, a constexpr reassigned, branches whose
values differ in type). Triton ships ptxas, so every kernel can be compiled ahead of
time down to a cubin without a GPU. That runs in a subprocess: the kernels module
must be imported without TRITON_INTERPRET, which test_kernels.py sets in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from steer.kernels.fused import triton_importable

pytestmark = pytest.mark.skipif(not triton_importable(), reason="needs triton")

COMPILE_SCRIPT = textwrap.dedent('''
    import json, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from steer.kernels import fused_kernels as fk
    from steer.kernels.fused import KernelPlan, _DOT_PRECISION
    from steer.kernels.reference import MLPConfig

    SCALARS = {"n_points": "i32", "part_stride": "i32", "dw_layer_stride": "i32", "chunk": "i32", "w0": "fp32"}

    def compile_kernel(fn, constexprs, num_warps):
        signature = {name: "constexpr" if name in constexprs else SCALARS.get(name, "*fp32")
                     for name in fn.arg_names}
        kernel = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": num_warps})
        return len(kernel.asm["cubin"])

    results = []
    for case in json.loads(sys.argv[1]):
        precision = case.pop("precision")
        plan = KernelPlan.from_config(MLPConfig(**case), precision)
        dot = _DOT_PRECISION[precision]
        launches = [("forward", fk.mlp_forward_kernel, plan.forward_constexprs(dot, True)),
                    ("backward_data", fk.mlp_backward_data_kernel, plan.backward_data_constexprs(dot))]
        launches += [(f"weight_grad_{group}", fk.mlp_weight_grad_kernel, plan.weight_grad_constexprs(dot, group))
                     for group in ("first", "hidden", "out")]
        for name, fn, constexprs in launches:
            results.append([name, precision, compile_kernel(fn, constexprs, plan.num_warps)])
    print(json.dumps(results))
''')

CASES = [
    dict(width=64, hidden_layers=3, activation="relu", encoding="none", output="sigmoid", precision="tf32"),
    dict(width=32, hidden_layers=2, activation="sine", encoding="fourier", fourier_features=5, output="linear",
         precision="bf16"),
    dict(width=16, hidden_layers=1, activation="sine", encoding="fourier", output="sigmoid", precision="fp32"),
    dict(width=128, hidden_layers=2, activation="relu", encoding="fourier", output="linear", precision="tf32x3"),
]


def test_every_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence 3.9's warning; fusion is the old default
    proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, json.dumps(CASES)], env=env,
                          capture_output=True, text=True, timeout=900)
    last_line = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    if proc.returncode != 0 and ("Cannot find ptxas" in last_line or
                                 ("ImportError" in last_line and "triton" in last_line)):
        pytest.skip(f"no NVIDIA toolchain or compile API in this triton: {last_line}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 5 * len(CASES)
    assert all(size > 0 for _, _, size in results), results
