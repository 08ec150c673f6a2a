"""The flags of the kernel benchmark, shared by `steer bench` and `python -m steer.kernels.bench`.

Apart from `bench.py` because that imports torch, and `steer --help` builds every
subcommand's parser: registering these flags must stay cheap.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    parser.add_argument("--json", type=Path, help="write the environment and rows as JSON here")
    parser.add_argument("--plot", type=Path, help="write a PNG plot here (needs matplotlib)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--points", type=int, nargs="+", help="point counts (default: by device)")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--hidden-layers", type=int, default=3)
    parser.add_argument("--backends", nargs="+", help="e.g. torch compile triton:tf32 (default: by device)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--variants", nargs="+", default=[], choices=["read", "fused", "graph"],
                        help="also time each step these ways: read (the loss read back every step, as a trial "
                             "that checks it each step), fused (Adam's fused implementation), graph (the whole "
                             "step as one CUDA graph); CUDA only for fused and graph")
    parser.add_argument("--threads", type=int, help="torch CPU threads (torch.set_num_threads) for this run")
