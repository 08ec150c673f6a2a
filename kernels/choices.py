"""The values the kernels' options take, in plain Python: no torch here.

`steer.spec` checks a study spec against these, and every `steer --help` builds the
spec's parser; neither should wait for torch to load.
"""

from __future__ import annotations

BACKENDS = ("auto", "torch", "compile", "triton")
# Inputs of tl.dot; accumulation is always fp32. "fp32" is IEEE fp32 (CUDA cores, slow at
# width 128), "tf32x3" splits each fp32 input in three tf32 parts: about fp32 accuracy on
# tensor cores; "tf32" and "bf16" are the fast, lossy ones.
PRECISIONS = ("fp32", "tf32x3", "tf32", "bf16")
# The one default for every layer (spec, trainer, build_model, the kernels, the benchmark):
# the fastest precision that keeps the quick study's PSNR within 0.1 dB of IEEE fp32, as
# measured on an H200 (docs/kernels.md, "Measured on a GPU"): tf32 moved the quick study's
# three kinds of net by +0.001, +0.052 and -0.085 dB; bf16 moved the sine net by +0.117 dB;
# tf32x3 is slower than tf32 and faulted once under Triton 3.6. The interpreter computes
# tf32 as exact fp32, so CPU runs are unaffected.
DEFAULT_PRECISION = "tf32"
# MLPConfig's choices (see reference.py).
ACTIVATIONS = ("relu", "sine")
ENCODINGS = ("none", "fourier")
OUTPUTS = ("sigmoid", "linear")
