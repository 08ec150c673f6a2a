"""Registers, spills and shared memory of every fused kernel for sm_90, measured without a GPU.

    python -m steer.kernels.resources [--widths 16 32 64 128] [--precisions tf32] [--json PATH]

Triton ships ptxas, so each kernel is compiled here down to PTX exactly as a launch on an
H100/H200 would compile it, and ptxas -v (the same ptxas, the same sm_90a target) reports
what one thread uses. A kernel that spills keeps part of its state in local memory (DRAM
behind L1), which costs far more than its arithmetic; registers per thread bound how many
programs share an SM. The table is recorded in docs/kernels.md and a test fails when the
default precision spills at width <= 64.

Needs triton compiled (not interpreted) kernels: it refuses to run under TRITON_INTERPRET=1,
so tests call it in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

from .choices import DEFAULT_PRECISION, PRECISIONS
from .fused import _DOT_PRECISION, KernelPlan, interpreter_requested, step_blocks, step_constexprs, \
    step_unsupported_reason
from .reference import MLPConfig

# The kernels' scalar arguments; every other argument is a float32 pointer.
_SCALARS = {"n_points": "i32", "part_stride": "i32", "dw_layer_stride": "i32", "chunk": "i32", "w0": "fp32",
            "scale": "fp32"}
_ARCH = 90


def _ptxas() -> str:
    from triton.backends.nvidia import compiler

    try:
        return compiler.get_ptxas(_ARCH).path  # triton >= 3.5 takes the arch
    except TypeError:
        return compiler.get_ptxas().path


def _ptxas_report(ptx: str) -> dict[str, int]:
    """What ptxas -v says one thread of the kernel uses, for the GPU the PTX targets (`.target sm_90a`)."""
    target = re.search(r"^\.target\s+(sm_\w+)", ptx, re.MULTILINE)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "kernel.ptx")
        src.write_text(ptx)
        proc = subprocess.run([_ptxas(), "-v", f"--gpu-name={target.group(1) if target else f'sm_{_ARCH}a'}",
                               str(src), "-o", str(Path(tmp, "k.o"))], capture_output=True, text=True, check=True)
    log = proc.stderr + proc.stdout

    def number(pattern: str) -> int:
        match = re.search(pattern, log)
        return int(match.group(1)) if match else 0

    return {"registers": number(r"Used (\d+) registers"), "spill_stores": number(r"(\d+) bytes spill stores"),
            "spill_loads": number(r"(\d+) bytes spill loads"), "stack": number(r"(\d+) bytes stack frame")}


def _launches(plan: KernelPlan) -> list[tuple[str, object, dict, int]]:
    """(name, kernel, constexprs, num_warps) of each launch: the split kernels, and the one-kernel step
    where it takes the net (with the Huber loss, the one with the most arithmetic)."""
    from . import fused_kernels as fk

    dot = _DOT_PRECISION[plan.precision]
    warps = plan.num_warps
    launches = [("forward", fk.mlp_forward_kernel, plan.forward_constexprs(dot, True), warps),
                ("backward_data", fk.mlp_backward_data_kernel, plan.backward_data_constexprs(dot), warps)]
    launches += [(f"weight_grad_{group}", fk.mlp_weight_grad_kernel, plan.weight_grad_constexprs(dot, group), warps)
                 for group in ("first", "hidden", "out")]
    if step_unsupported_reason(plan, "huber") is None:
        launches.append(("train_step", fk.mlp_train_step_kernel, {**step_constexprs(plan, "huber"), "PRECISION": dot},
                         step_blocks(plan)[1]))
    return launches


def _compile(fn: object, constexprs: dict, num_warps: int, arch: int) -> tuple[object, dict[str, int]]:
    """Compile one kernel for sm_`arch` as a launch would (no GPU needed): the compiled kernel and ptxas's
    report of it."""
    if interpreter_requested():
        raise RuntimeError("compiling the kernels needs TRITON_INTERPRET unset (tests do it in a subprocess)")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {arg: "constexpr" if arg in constexprs else _SCALARS.get(arg, "*fp32") for arg in fn.arg_names}
    kernel = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": num_warps})
    return kernel, _ptxas_report(kernel.asm["ptx"])


def kernel_resources(config: MLPConfig, precision: str = DEFAULT_PRECISION, arch: int = _ARCH) -> list[dict]:
    """One row per kernel launch of a training step of `config` for sm_`arch`: registers, spills, shared
    memory."""
    plan = KernelPlan.from_config(config, precision)
    rows = []
    for name, fn, constexprs, num_warps in _launches(plan):
        kernel, report = _compile(fn, constexprs, num_warps, arch)
        rows.append({
            "kernel": name, "width": config.width, "hidden_layers": config.hidden_layers,
            "activation": config.activation, "encoding": config.encoding, "precision": precision,
            "block_m": constexprs.get("BLOCK_M", plan.block_m), "num_warps": num_warps,
            "shared_bytes": kernel.metadata.shared,
            "cubin_bytes": len(kernel.asm["cubin"]), **report,
        })
    return rows


def step_resources(plan: KernelPlan, loss: str, arch: int = _ARCH) -> dict[str, int]:
    """What the one-kernel step of `plan` with `loss` uses when the installed Triton compiles it for
    sm_`arch`: "spills", bytes per thread stored and loaded, and "shared_bytes" per block. The static
    table is for Triton 3.9; Triton 3.6 (torch 2.11's) spilled where 3.9 did not, and its tf32x3 step
    at width 64 needs more shared memory than an H200 has, so a GPU asks its own Triton (FusedCoordMLP)."""
    from . import fused_kernels as fk

    constexprs = {**step_constexprs(plan, loss), "PRECISION": _DOT_PRECISION[plan.precision]}
    kernel, report = _compile(fk.mlp_train_step_kernel, constexprs, step_blocks(plan)[1], arch)
    return {"spills": report["spill_stores"] + report["spill_loads"], "shared_bytes": kernel.metadata.shared}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| width | layers | activation | encoding | precision | kernel | registers | spill stores / loads (B) "
             "| shared (B) |", "|---:|---:|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['width']} | {r['hidden_layers']} | {r['activation']} | {r['encoding']} | "
                     f"{r['precision']} | {r['kernel']} | {r['registers']} | {r['spill_stores']} / "
                     f"{r['spill_loads']} | {r['shared_bytes']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steer.kernels.resources", description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--hidden-layers", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--activations", nargs="+", default=["relu", "sine"])
    parser.add_argument("--encodings", nargs="+", default=["none", "fourier"])
    parser.add_argument("--arch", default=str(_ARCH),
                        help=f"compute capability to compile for, e.g. 90 or 80 (default {_ARCH}); auto: this "
                             f"machine's GPU ({_ARCH} without one), as `make gpu-check` does")
    parser.add_argument("--json", type=Path, help="also write the rows here as JSON")
    args = parser.parse_args(argv)
    import triton

    arch = _arch(args.arch, parser)
    rows = []
    for width in args.widths:
        for activation in args.activations:
            for encoding in args.encodings:
                config = MLPConfig(width=width, hidden_layers=args.hidden_layers, activation=activation,
                                   encoding=encoding)
                for precision in args.precisions:
                    rows += kernel_resources(config, precision, arch)
    print(f"sm_{arch}, triton {triton.__version__}, {_ptxas()}")
    print(markdown_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"triton": triton.__version__, "arch": f"sm_{arch}", "rows": rows},
                                        indent=2) + "\n")
    return 0


def _arch(raw: str, parser: argparse.ArgumentParser) -> int:
    """`--arch`: a compute capability as digits (90), or auto (this machine's GPU, else 90)."""
    if raw == "auto":
        import torch

        if not torch.cuda.is_available():
            return _ARCH
        major, minor = torch.cuda.get_device_capability()
        return major * 10 + minor
    if not raw.isdigit() or not 50 <= int(raw) <= 120:
        parser.error(f"--arch: got {raw!r}; allowed: a compute capability such as 80 or 90, or auto")
    return int(raw)


if __name__ == "__main__":
    raise SystemExit(main())
