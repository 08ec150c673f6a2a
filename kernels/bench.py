"""Benchmark one full training step (forward, MSE loss, backward, Adam step) per backend.

    python -m steer.kernels.bench [--json PATH] [--plot PATH]

On CUDA it times torch (eager), compile, the fused triton kernels at each input
precision, the one-kernel training step (`triton-step`) where it takes the net, and
tiny-cuda-nn's FullyFusedMLP when `tinycudann` is importable, at 2^14 to 2^20 points.
Without CUDA it times torch and compile on the CPU at smaller sizes and records that
triton needs CUDA. Importing this module does nothing; `run_benchmark`,
`markdown_table`, `save_plot` and `environment` are what a CLI calls.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import DEFAULT_PRECISION, BackendError, MLPConfig, build_model
from .bench_args import add_arguments

GPU_POINTS = tuple(2**k for k in range(14, 21))
CPU_POINTS = (2**10, 2**12, 2**14)
GPU_BACKENDS = ("torch", "compile", "triton:fp32", "triton:tf32x3", "triton:tf32", "triton:bf16", "triton-step:tf32",
                "triton-step:bf16", "tinycudann")
CPU_BACKENDS = ("torch", "compile", "triton")


def environment(device: torch.device | str | None = None) -> dict:
    """What the numbers were measured on: device name, CPU model, library versions."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            cpu = f"{names[0]} ({len(names)} logical cores)"
    triton_version = None
    if importlib.util.find_spec("triton") is not None:
        import triton
        triton_version = triton.__version__
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu}",
        "cpu": cpu,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tinycudann_model(config: MLPConfig, device: torch.device) -> torch.nn.Module:
    import tinycudann as tcnn  # optional, GPU only

    return tcnn.Network(
        n_input_dims=config.in_features, n_output_dims=config.out_features,
        network_config={"otype": "FullyFusedMLP", "activation": "ReLU", "output_activation": "Sigmoid",
                        "n_neurons": config.width, "n_hidden_layers": config.hidden_layers},
    ).to(device)


def _step_fn(model: torch.nn.Module, coords: torch.Tensor, target: torch.Tensor, mode: str,
             one_kernel: bool = False) -> Callable[[], None]:
    """One full training step (zero grads, forward, MSE, backward, Adam step) as a function;
    `one_kernel`: forward, MSE and backward as the one-kernel step (`FusedCoordMLP.loss_and_grads`).

    mode "eager": Adam's default (foreach) implementation; "read": the same, reading the loss
    back after every step (`loss.item()`), as a trial that checks every step for divergence
    does: the host then waits for the GPU each step; "fused": Adam's fused implementation
    (one launch for all parameters); "graph": the whole step, fused Adam included, captured
    as one CUDA graph and replayed, so the host launches once per step.
    """
    fused = mode in ("fused", "graph")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None,
                                 capturable=mode == "graph")

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        if one_kernel:
            loss = model.loss_and_grads(coords, target, "mse")
        else:
            loss = F.mse_loss(model(coords).float(), target)
            loss.backward()
        optimizer.step()
        return loss

    if mode == "read":
        return lambda: step().item()
    if mode != "graph":
        return step
    # Warm up on a side stream first, as torch.cuda.graphs asks: kernels compile, Adam builds its state.
    device = coords.device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # the captured backward then allocates .grad from the graph's pool
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def _time_steps(model: torch.nn.Module, coords: torch.Tensor, target: torch.Tensor, steps: int,
                warmup: int, repeats: int = 5, mode: str = "eager", one_kernel: bool = False) -> tuple[float, float]:
    """(seconds of the first step, including any compilation or capture; seconds per step after warm-up).

    The `steps` timed steps run in `repeats` groups, synchronised around each group; the
    result is the median of the groups' means, which a busy machine disturbs less.
    `mode` and `one_kernel` are how a step runs (see `_step_fn`).
    """
    device = coords.device
    _sync(device)
    start = time.perf_counter()
    step = _step_fn(model, coords, target, mode, one_kernel)
    step()
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        step()
    per_group = max(1, steps // repeats)
    means = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(per_group):
            step()
        _sync(device)
        means.append((time.perf_counter() - start) / per_group)
    return first, statistics.median(means)


# The step's variants beside the plain eager one, each a column of its own: (mode, row key, table header).
VARIANTS = (
    ("read", "ms_per_step_loss_read", "ms / step, loss read each step"),
    ("fused", "ms_per_step_fused_adam", "ms / step, fused Adam"),
    ("graph", "ms_per_step_graph", "ms / step, one CUDA graph"),
)


def _row(backend: str, precision: str | None, config: MLPConfig, points: int, device: torch.device,
         status: str = "ok", note: str = "", first: float | None = None, per_step: float | None = None,
         variants: dict[str, float | str] | None = None) -> dict:
    """One measurement; `variants` maps a VARIANTS row key to its seconds per step (or why it failed)."""
    row = {
        "backend": backend, "precision": precision, "device": str(device), "width": config.width,
        "hidden_layers": config.hidden_layers, "points": points, "status": status, "note": note,
        "ms_per_step": None if per_step is None else per_step * 1e3,
        "mpoints_per_s": None if per_step is None else points / per_step / 1e6,
        "first_step_s": first,
    }
    for _, key, _ in VARIANTS:  # None when not measured, a string when it failed
        value = (variants or {}).get(key)
        row[key] = value * 1e3 if isinstance(value, float) else value
    return row


def run_benchmark(
    points: tuple[int, ...] | None = None,
    widths: tuple[int, ...] = (32, 64, 128),
    hidden_layers: int = 3,
    backends: tuple[str, ...] | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    device: torch.device | str | None = None,
    variants: tuple[str, ...] = (),
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Time a full training step for each backend x width x point count; one dict per measurement.

    `backends` entries: "torch", "compile", "triton" (at DEFAULT_PRECISION) or
    "triton:<precision>" (fp32, tf32x3, tf32, bf16), "triton-step[:<precision>]" (the
    one-kernel step; a "skipped" row says why where this GPU's Triton cannot run it for the
    net), "tinycudann". Defaults depend on the device: on CUDA every backend at 2^14..2^20
    points, 50 steps after 10 warm-up steps; on the CPU torch and compile at 2^10..2^14
    points, 10 steps after 2, and a "skipped" row saying triton needs CUDA.
    The net is the seeds' one: ReLU hidden layers, sigmoid output, no encoding.
    `variants` (modes of VARIANTS: "read", "fused", "graph") also times each backend's step
    those ways, each in a column of its own; a variant that fails (a backend that cannot be
    captured, say) puts its error in its column. `on_row` sees each row as it is measured
    (a long run that is stopped keeps what it printed).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    points = tuple(points or (GPU_POINTS if on_gpu else CPU_POINTS))
    backends = tuple(backends or (GPU_BACKENDS if on_gpu else CPU_BACKENDS))
    steps = steps or (50 if on_gpu else 10)
    warmup = warmup or (10 if on_gpu else 2)
    rows: list[dict] = _Rows(on_row)
    generator = torch.Generator().manual_seed(0)
    for width in widths:
        config = MLPConfig(width=width, hidden_layers=hidden_layers)
        for n in points:
            coords = (torch.rand(n, 2, generator=generator) * 2 - 1).to(device)
            target = torch.rand(n, 3, generator=generator).to(device)
            for spec in backends:
                name, _, precision = spec.partition(":")
                one_kernel = name == "triton-step"
                if name in ("triton", "triton-step"):
                    precision = precision or DEFAULT_PRECISION
                    if not on_gpu:  # TRITON_INTERPRET would run, but it is no timing
                        rows.append(_row(name, precision, config, n, device, "skipped", "triton needs a CUDA device"))
                        continue
                try:
                    if name == "tinycudann":
                        if not on_gpu or importlib.util.find_spec("tinycudann") is None:
                            rows.append(_row(name, "fp16", config, n, device, "skipped",
                                             "needs CUDA and the tinycudann package"))
                            continue
                        model = _tinycudann_model(config, device)
                        precision = "fp16"
                    else:
                        model, _ = build_model(config, "triton" if one_kernel else name, device,
                                               generator=torch.Generator().manual_seed(0),
                                               precision=precision or DEFAULT_PRECISION)
                        refused = model.step_unsupported_reason("mse") if one_kernel else None
                        if refused:
                            raise BackendError(f"the one-kernel step does not take this net here: {refused}")
                except BackendError as exc:
                    rows.append(_row(name, precision or None, config, n, device, "skipped", str(exc)))
                    continue
                try:
                    first, per_step = _time_steps(model, coords, target, steps, warmup, one_kernel=one_kernel)
                except torch.cuda.OutOfMemoryError as exc:
                    rows.append(_row(name, precision or None, config, n, device, "error", f"out of memory: {exc}"))
                    continue
                measured: dict[str, float | str] = {}
                for mode, key, _ in VARIANTS:
                    if mode not in variants:
                        continue
                    if mode in ("fused", "graph") and not on_gpu:
                        measured[key] = "needs CUDA"
                        continue
                    try:
                        measured[key] = _time_steps(model, coords, target, steps, warmup, mode=mode,
                                                    one_kernel=one_kernel)[1]
                    except Exception as exc:  # noqa: BLE001 - a variant that fails is a finding, not the end
                        measured[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                rows.append(_row(name, precision or None, config, n, device, first=first, per_step=per_step,
                                 variants=measured))
                del model
    return rows


class _Rows(list):
    """A list that shows each row appended to it to `on_row`."""

    def __init__(self, on_row: Callable[[dict], None] | None) -> None:
        super().__init__()
        self._on_row = on_row

    def append(self, row: dict) -> None:
        super().append(row)
        if self._on_row is not None:
            self._on_row(row)


def _label(row: dict) -> str:
    return f"{row['backend']} ({row['precision']})" if row["precision"] else row["backend"]


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table; speed-ups are against torch (eager) at the same size."""
    eager = {(r["width"], r["points"]): r["ms_per_step"] for r in rows if r["backend"] == "torch" and r["ms_per_step"]}
    extra = [(key, header) for _, key, header in VARIANTS if any(r.get(key) is not None for r in rows)]
    lines = ["| width | points | backend | ms / step | Mpoints / s | vs torch | first step (s) |"
             + "".join(f" {header} |" for _, header in extra),
             "|---:|---:|---|---:|---:|---:|---:|" + "---:|" * len(extra)]
    for r in sorted(rows, key=lambda r: (r["width"], r["points"])):
        if r["ms_per_step"] is None:
            lines.append(f"| {r['width']} | 2^{int(math.log2(r['points']))} | {_label(r)} | {r['status']}: "
                         f"{r['note']} | | | |" + " |" * len(extra))
            continue
        base = eager.get((r["width"], r["points"]))
        speedup = f"{base / r['ms_per_step']:.2f}x" if base else ""
        cells = "".join(f" {_cell(r.get(key))} |" for key, _ in extra)
        lines.append(f"| {r['width']} | 2^{int(math.log2(r['points']))} | {_label(r)} | {r['ms_per_step']:.3f} | "
                     f"{r['mpoints_per_s']:.2f} | {speedup} | {r['first_step_s']:.2f} |{cells}")
    return "\n".join(lines)


def _cell(value: float | str | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else value.replace("|", "/")


def save_plot(rows: list[dict], path: str | Path, title: str | None = None) -> Path | None:
    """ms per step against points, one panel per width, one line per backend; None without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed (pip install 'steer[bench]'); no plot written")
        return None
    from matplotlib.figure import Figure  # no pyplot: no global state

    measured = [r for r in rows if r["ms_per_step"] is not None]
    widths = sorted({r["width"] for r in measured})
    if not widths:
        print("no measured rows; no plot written")
        return None
    fig = Figure(figsize=(4.2 * len(widths), 3.6), layout="constrained")
    axes = fig.subplots(1, len(widths), squeeze=False)[0]
    for ax, width in zip(axes, widths):
        for label in sorted({_label(r) for r in measured if r["width"] == width}):
            series = sorted((r["points"], r["ms_per_step"]) for r in measured
                            if r["width"] == width and _label(r) == label)
            ax.plot([p for p, _ in series], [ms for _, ms in series], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("points")
        ax.set_ylabel("ms per training step")
        ax.set_title(f"width {width}, {measured[0]['hidden_layers']} hidden layers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _write_json(path: Path, env: dict, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")


def _print_row(row: dict) -> None:
    figures = "" if row["ms_per_step"] is None else f"{row['ms_per_step']:.3f} ms/step"
    for _, key, header in VARIANTS:
        if row.get(key) is not None:
            figures += f"; {header.removeprefix('ms / step, ')}: {_cell(row[key])}"
    print(f"measured: width {row['width']}, {row['points']} points, {_label(row)}: "
          f"{figures or row['status'] + ': ' + row['note']}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed `args`; prints the table, writes JSON and plot if asked."""
    if args.threads:
        torch.set_num_threads(args.threads)

    env = environment(args.device)
    measured: list[dict] = []

    def on_row(row: dict) -> None:
        """Print each row as it is measured and keep the JSON current: a run stopped by a time limit
        (make gpu-check gives each step one) keeps what it measured."""
        _print_row(row)
        measured.append(row)
        if args.json:
            _write_json(args.json, env, measured)

    rows = run_benchmark(points=args.points, widths=tuple(args.widths), hidden_layers=args.hidden_layers,
                         backends=args.backends, steps=args.steps, warmup=args.warmup, device=args.device,
                         variants=tuple(args.variants), on_row=on_row)
    load = env["load_average_1min"]
    print(f"{env['device']}; torch {env['torch']}, triton {env['triton']}; {env['torch_threads']} torch threads"
          + (f"; load average {load:.1f} before the run" if load is not None else ""))
    print(markdown_table(rows))
    if args.json:
        _write_json(args.json, env, rows)
    if args.plot:
        title = f"{env['device']} - torch {env['torch']}, triton {env['triton']}"
        written = save_plot(rows, args.plot, title=title)
        if written:
            print(f"plot written to {written}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steer.kernels.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
