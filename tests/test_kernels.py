"""The fused Triton kernels against the PyTorch reference: values and every gradient.

Without CUDA the kernels run in Triton's CPU interpreter: TRITON_INTERPRET=1 is set
here, before anything imports triton (steer.kernels imports it only when the kernels
are first launched). With CUDA the same checks run on compiled kernels, at fp32, tf32x3, tf32
and bf16 input precision (`TestCompiledKernels`); `TRITON_INTERPRET=1 pytest ...` on a
GPU machine runs the interpreter tests instead.
"""

from __future__ import annotations

import itertools
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Only torch, triton and pytest here (optuna and the rest are imported where a test needs them):
# on a GPU machine these tests run before the project's other dependencies are installed.
from steer.kernels import (  # noqa: E402
    BACKENDS, BackendError, CompiledCoordMLP, CoordMLP, FusedCoordMLP, MLPConfig, build_model, resolve_backend,
)
import steer.kernels.fused as fused_module  # noqa: E402
from steer.kernels.reference import BF16CoordMLP  # noqa: E402
from steer.kernels.fused import (  # noqa: E402
    KernelPlan, fused_forward, interpreter_requested, triton_importable,
)

HAS_TRITON = triton_importable()
INTERPRETED = interpreter_requested()
needs_interpreter = pytest.mark.skipif(
    not (HAS_TRITON and INTERPRETED), reason="needs triton and TRITON_INTERPRET=1 (set when CUDA is absent)"
)
needs_cuda = pytest.mark.skipif(
    not (HAS_TRITON and torch.cuda.is_available() and not INTERPRETED),
    reason="needs triton, a CUDA device and compiled (not interpreted) kernels",
)

# fp32: elementwise, rtol and atol as a fraction of the largest reference value. On a GPU
# the sums run in another order than cuBLAS's and Fourier phases reach ~400 rad (where an
# fp32 ulp is 3e-5), so atol is looser there.
FP32_TOLERANCE = {"cpu": dict(rtol=1e-4, atol_frac=1e-5), "cuda": dict(rtol=1e-4, atol_frac=1e-4)}
# tf32 / bf16: relative error in norm, ||actual - expected|| / ||expected||, forward and grads.
# Rounding the inputs of every product to bf16 (as an independent torch emulation does too)
# moves the gradients of a deep ReLU net at its default init by up to ~8% in norm (they are
# small sums of large terms of both signs), SIREN's by ~1-4%; tf32 has 3 more mantissa bits,
# yet on an H200 (Triton 3.6) it moved the first layer's weight gradient by 4.1% (width 64, 3
# layers, Fourier) and 4.7% (width 128, 8 layers): the same cancellations, so 6e-2.
# "optimizer": parameters after AdamW steps. Adam's first steps normalise each gradient
# element (the update is about lr * sign(g)), so an element whose gradient is smaller than
# the precision's error can move the other way: the error is set by how many gradients are
# tiny, not by the precision alone. On the H200, tf32x3 and tf32 gave 1.2% after 3 steps in one
# session and tf32x3 2.2% in another (same Triton 3.6, same seeds), so 3e-2.
REDUCED_TOLERANCES = {"tf32x3": dict(forward=1e-4, grad=1e-3, optimizer=3e-2),
                      "tf32": dict(forward=1.5e-2, grad=6e-2, optimizer=3e-2),
                      "bf16": dict(forward=5e-2, grad=0.15, optimizer=5e-2)}


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, precision: str, name: str,
                   kind: str = "grad") -> None:
    if precision == "fp32":
        tol = FP32_TOLERANCE[expected.device.type]
        atol = tol["atol_frac"] * max(expected.abs().max().item(), 1e-6)
        torch.testing.assert_close(actual, expected, rtol=tol["rtol"], atol=atol, msg=lambda m: f"{name}: {m}")
        return
    assert actual.shape == expected.shape, name
    error = ((actual - expected).norm() / expected.norm().clamp_min(1e-12)).item()
    tolerance = REDUCED_TOLERANCES[precision][kind]
    assert error <= tolerance, f"{name}: relative error {error:.3g} > {tolerance} at {precision}"


def make_pair(config: MLPConfig, device: str = "cpu", seed: int = 0, **fused_kwargs):
    """A reference CoordMLP and a FusedCoordMLP with the same weights (and Fourier matrix)."""
    reference = CoordMLP(config, generator=torch.Generator().manual_seed(seed)).to(device)
    fused = FusedCoordMLP(config, **fused_kwargs).to(device)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def check_against_reference(config: MLPConfig, n: int, device: str = "cpu", precision: str = "fp32",
                            **fused_kwargs) -> None:
    """Forward values and all parameter gradients of the fused MLP vs the reference."""
    reference, fused = make_pair(config, device, precision=precision, **fused_kwargs)
    gen = torch.Generator().manual_seed(n)
    coords = (torch.rand(n, config.in_features, generator=gen) * 2 - 1).to(device)
    weights = torch.randn(n, config.out_features, generator=gen).to(device)  # a random dloss/dy

    expected = reference(coords)
    actual = fused(coords)
    assert actual.shape == expected.shape
    assert_matches(actual, expected, precision, "forward", kind="forward")
    (expected * weights).sum().backward()
    (actual * weights).sum().backward()
    for (name, p_ref), (name_f, p_fused) in zip(reference.named_parameters(), fused.named_parameters()):
        assert name == name_f
        assert p_fused.grad is not None, name
        assert_matches(p_fused.grad, p_ref.grad, precision, f"grad of {name}")


def _grid():
    """Small widths over every feature combination; a few large or deep nets; odd point counts."""
    small = itertools.product((16, 32), (1, 2, 3), ("relu", "sine"), ("sigmoid", "linear"), ("none", "fourier"))
    points = itertools.cycle((1, 37, 130))
    splits = itertools.cycle((None, 2, 3))
    cases = [dict(width=w, hidden_layers=d, activation=a, output=o, encoding=e, n=next(points),
                  block_m=32, splits=next(splits), fourier_features=8)
             for w, d, a, o, e in small]
    cases += [
        dict(width=64, hidden_layers=2, activation="relu", output="sigmoid", encoding="fourier", n=130, block_m=64),
        dict(width=64, hidden_layers=3, activation="sine", output="linear", encoding="none", n=201),
        dict(width=128, hidden_layers=2, activation="sine", output="sigmoid", encoding="fourier", n=130,
             fourier_features=64),
        dict(width=128, hidden_layers=3, activation="relu", output="linear", encoding="none", n=77, block_m=32),
        dict(width=32, hidden_layers=8, activation="relu", output="sigmoid", encoding="fourier", n=130,
             fourier_features=5, block_m=32, splits=3),
        dict(width=16, hidden_layers=8, activation="sine", output="linear", encoding="none", n=37, block_m=16),
    ]
    return cases


def _case_id(case: dict) -> str:
    return "w{width}-d{hidden_layers}-{activation}-{output}-{encoding}-n{n}".format(**case)


def _split_case(case: dict) -> tuple[MLPConfig, int, dict]:
    case = dict(case)
    n = case.pop("n")
    kernel_kwargs = {k: case.pop(k) for k in ("block_m", "splits") if k in case}
    return MLPConfig(**case), n, kernel_kwargs


STEP_LOSSES = {"mse": torch.nn.functional.mse_loss, "l1": torch.nn.functional.l1_loss,
               "huber": lambda a, b: torch.nn.functional.huber_loss(a, b, delta=0.1)}  # steer.trainer's


def check_train_step(config: MLPConfig, n: int, loss: str, device: str = "cpu", precision: str = "fp32",
                     programs: int | None = None) -> None:
    """The one-kernel step's loss and every gradient against the reference's autograd of the same loss."""
    reference, fused = make_pair(config, device, precision=precision)
    gen = torch.Generator().manual_seed(n)
    coords = (torch.rand(n, config.in_features, generator=gen) * 2 - 1).to(device)
    target = torch.rand(n, config.out_features, generator=gen).to(device)
    expected = STEP_LOSSES[loss](reference(coords), target)
    expected.backward()
    plan = fused.plan
    flat = torch.cat([p.detach().reshape(-1) for p in fused.parameters()])
    value, dflat = fused_module.fused_train_step(coords, target, fused.fourier_b, flat, plan, loss, programs)
    assert_matches(value, expected.detach(), precision, "loss", kind="forward")
    grads = dflat.split([p.numel() for p in fused.parameters()])
    for (name, p_ref), g in zip(reference.named_parameters(), grads):
        assert_matches(g.view(p_ref.shape), p_ref.grad, precision, f"grad of {name} ({loss})")


def _step_grid():
    """Every loss, both activations and outputs, with and without Fourier features, at each width's deepest
    net the one kernel takes; odd point counts, so that tiles and programs end part-way."""
    cases = []
    points, programs = itertools.cycle((1, 37, 130, 257)), itertools.cycle((None, 1, 3))
    for (width, hidden, encoding), loss, (activation, output) in itertools.product(
            ((16, 4, "none"), (16, 2, "fourier"), (32, 2, "none"), (64, 4, "none"), (64, 3, "fourier")),
            ("mse", "l1", "huber"), (("relu", "sigmoid"), ("sine", "linear"))):
        cases.append(dict(width=width, hidden_layers=hidden, encoding=encoding, loss=loss, activation=activation,
                          output=output, n=next(points), programs=next(programs)))
    return cases[::2] + [dict(width=64, hidden_layers=1, encoding="fourier", loss="mse", activation="sine",
                              output="sigmoid", n=65, programs=2, fourier_features=32)]


@needs_interpreter
class TestInterpretedTrainStep:
    """The whole step in one kernel (`mlp_train_step_kernel`), in Triton's CPU interpreter."""

    @pytest.mark.parametrize("case", _step_grid(),
                             ids=lambda c: "w{width}-d{hidden_layers}-{encoding}-{activation}-{output}-{loss}-n{n}"
                             .format(**c))
    def test_loss_and_every_gradient(self, case):
        case = dict(case)
        n, loss, programs = case.pop("n"), case.pop("loss"), case.pop("programs")
        check_train_step(MLPConfig(**case), n, loss, programs=programs)

    def test_bf16_inputs(self):
        check_train_step(MLPConfig(width=32, hidden_layers=2, activation="sine"), 130, "mse", precision="bf16")

    def test_deterministic_and_the_same_for_any_split_of_the_points_up_to_rounding(self):
        _, fused = make_pair(MLPConfig(width=32, hidden_layers=2), precision="fp32")
        coords, target = torch.rand(300, 2), torch.rand(300, 3)
        flat = torch.cat([p.detach().reshape(-1) for p in fused.parameters()])
        runs = [fused_module.fused_train_step(coords, target, fused.fourier_b, flat, fused.plan, "mse", programs)
                for programs in (3, 3, 1)]
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
        torch.testing.assert_close(runs[0][1], runs[2][1], rtol=1e-5, atol=1e-7)

    def test_no_points_and_shapes_it_does_not_take(self):
        _, fused = make_pair(MLPConfig(width=16, hidden_layers=1), precision="fp32")
        value = fused.loss_and_grads(torch.empty(0, 2), torch.empty(0, 3), "mse")
        assert value.item() == 0 and all(torch.equal(p.grad, torch.zeros_like(p)) for p in fused.parameters())
        for config, loss, says in ((MLPConfig(width=128, hidden_layers=2), "mse", "width 128"),
                                   (MLPConfig(width=32, hidden_layers=3), "mse", "3 hidden layers at width 32"),
                                   (MLPConfig(width=32, hidden_layers=1, encoding="fourier"), "mse",
                                    "Fourier features at width 32"),
                                   (MLPConfig(width=64, encoding="fourier", fourier_features=64), "mse",
                                    "64 Fourier features"),
                                   (MLPConfig(width=64), "smooth_l1", "loss 'smooth_l1'")):
            _, other = make_pair(config, precision="fp32")
            assert says in other.step_unsupported_reason(loss)
            with pytest.raises(BackendError, match=says):
                other.loss_and_grads(torch.rand(5, 2), torch.rand(5, 3), loss)

    def test_loss_and_grads_sets_every_parameters_grad(self):
        reference, fused = make_pair(MLPConfig(width=16, hidden_layers=2, encoding="fourier"), precision="fp32")
        coords, target = torch.rand(50, 2), torch.rand(50, 3)
        value = fused.loss_and_grads(coords, target, "huber")
        expected = STEP_LOSSES["huber"](reference(coords), target)
        expected.backward()
        torch.testing.assert_close(value, expected.detach())
        for p, q in zip(fused.parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7)


@needs_interpreter
class TestInterpretedKernels:
    """The kernels in Triton's CPU interpreter (tf32 is exact fp32 there; bf16 rounds for real)."""

    @pytest.mark.parametrize("case", _grid(), ids=_case_id)
    def test_forward_and_gradients(self, case):
        config, n, kernel_kwargs = _split_case(case)
        check_against_reference(config, n, **kernel_kwargs)

    @pytest.mark.parametrize("activation", ["relu", "sine"])
    def test_bf16_inputs(self, activation):
        # Emulated (inputs rounded to bf16, products in fp32): the numbers a GPU's bf16 dot gives.
        config = MLPConfig(width=32, hidden_layers=3, activation=activation, encoding="fourier", fourier_features=16)
        check_against_reference(config, 130, precision="bf16", block_m=64)

    def test_default_block_sizes(self):
        check_against_reference(MLPConfig(width=64, hidden_layers=3), 300)

    def test_leading_dimensions_and_no_grad(self, monkeypatch):
        reference, fused = make_pair(MLPConfig(width=16, hidden_layers=2, encoding="fourier"), precision="fp32",
                                     block_m=16)  # fp32: compared below at assert_close's fp32 tolerance
        coords = torch.rand(4, 5, 2) * 2 - 1
        stored = []
        original = fused_module.fused_forward
        monkeypatch.setattr(fused_module, "fused_forward",
                            lambda *a, store_z, **k: stored.append(store_z) or original(*a, store_z=store_z, **k))
        with torch.no_grad():
            out = fused(coords)
        with torch.inference_mode():
            fused(coords)
        assert out.shape == (4, 5, 3)
        torch.testing.assert_close(out, reference(coords))
        fused(coords).sum().backward()
        assert stored == [False, False, True]  # pre-activations are kept only when backward may run

    def test_no_points(self):
        _, fused = make_pair(MLPConfig(width=16, hidden_layers=2))
        out = fused(torch.empty(0, 2))
        assert out.shape == (0, 3)
        out.sum().backward()
        assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in fused.parameters())

    def test_gradients_are_deterministic(self):
        _, fused = make_pair(MLPConfig(width=32, hidden_layers=3, activation="sine"), block_m=32, splits=3)
        coords = torch.rand(300, 2)
        grads = []
        for _ in range(2):
            fused.zero_grad(set_to_none=True)
            fused(coords).square().sum().backward()
            grads.append([p.grad.clone() for p in fused.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*grads))

    def test_optimizer_steps_match_reference(self):
        check_training_steps(MLPConfig(width=32, hidden_layers=2, encoding="fourier", fourier_features=8), "cpu")

    def test_build_model_triton_under_interpreter(self):
        model, resolved = build_model(MLPConfig(width=16, hidden_layers=1), "triton", "cpu")
        assert resolved == "triton" and isinstance(model, FusedCoordMLP)

    def test_bad_tensors_are_rejected(self):
        plan = KernelPlan.from_config(MLPConfig(width=16, hidden_layers=1))
        params = torch.zeros(plan.num_params)
        fourier_b = torch.zeros(16, 2)
        with pytest.raises(ValueError, match="float32.*coords is torch.float64"):
            fused_forward(torch.zeros(5, 2, dtype=torch.float64), fourier_b, params, plan)
        with pytest.raises(ValueError, match="contiguous.*coords"):
            fused_forward(torch.zeros(2, 5).t(), fourier_b, params, plan)
        with pytest.raises(ValueError, match=r"coords must have shape \(N, 2\); got \(5, 3\)"):
            fused_forward(torch.zeros(5, 3), fourier_b, params, plan)
        with pytest.raises(ValueError, match=r"flat parameters must have shape"):
            fused_forward(torch.zeros(5, 2), fourier_b, params[:-1], plan)
        _, fused = make_pair(MLPConfig(width=16, hidden_layers=1))
        with pytest.raises(RuntimeError, match="no gradient for coords"):
            fused(torch.zeros(5, 2, requires_grad=True))


def check_training_steps(config: MLPConfig, device: str, precision: str = "fp32") -> None:
    """Adam (with weight decay) steps, then a switch to SGD: fused params track the reference's."""
    reference, fused = make_pair(config, device, precision=precision)
    gen = torch.Generator().manual_seed(1)
    coords = (torch.rand(97, 2, generator=gen) * 2 - 1).to(device)
    target = torch.rand(97, 3, generator=gen).to(device)
    for opt_cls, kwargs, steps in ((torch.optim.AdamW, dict(lr=1e-3, weight_decay=1e-2), 3),
                                   (torch.optim.SGD, dict(lr=1e-2, momentum=0.9), 2)):
        optims = [opt_cls(m.parameters(), **kwargs) for m in (reference, fused)]
        for _ in range(steps):
            for model, opt in zip((reference, fused), optims):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(coords), target).backward()
                opt.step()
            for (name, a), b in zip(reference.named_parameters(), fused.parameters()):
                assert_matches(b.detach(), a.detach(), precision, f"{name} after {opt_cls.__name__} step",
                               kind="optimizer")


class TestBackends:
    """build_model / resolve_backend: names, errors, auto resolution (no kernels launched)."""

    def test_parameter_names_identical_for_every_backend(self):
        config = MLPConfig(width=32, hidden_layers=2, encoding="fourier")
        expected = {k: v.shape for k, v in CoordMLP(config).state_dict().items()}
        backends = ["torch", "compile", "auto"] + (["triton"] if HAS_TRITON and INTERPRETED else [])
        for backend in backends:
            model, _ = build_model(config, backend, "cpu", generator=torch.Generator().manual_seed(0))
            assert isinstance(model, CoordMLP)
            assert {k: v.shape for k, v in model.state_dict().items()} == expected, backend
            reference = CoordMLP(config, generator=torch.Generator().manual_seed(0))
            for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
                assert torch.equal(a, b), backend

    @pytest.mark.parametrize("config", [MLPConfig(width=64, hidden_layers=2, activation="sine"),
                                        MLPConfig(width=32, hidden_layers=3, encoding="fourier")])
    def test_torch_backend_bf16_rounds_the_products_inputs_only(self, config):
        """precision="bf16" on the torch backend: the same parameters; each product's inputs rounded to
        bf16 and the rest fp32, like the fused kernels' bf16 (not autocast, whose bf16 activations cost
        a sine net 3.2 dB on the quick study)."""
        model, backend = build_model(config, "torch", "cpu", torch.Generator().manual_seed(0), precision="bf16")
        reference = CoordMLP(config, generator=torch.Generator().manual_seed(0))
        assert backend == "torch" and isinstance(model, BF16CoordMLP)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
        coords = torch.rand(301, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
        out, expected = model(coords), reference(coords)
        assert out.dtype == torch.float32 and out.shape == expected.shape
        error = ((out - expected).norm() / expected.norm()).item()
        assert 0 < error < 2e-2  # rounded (not fp32), and close
        # Rounding the inputs by hand gives its numbers, up to the bf16 rounding of the products'
        # results (torch's bf16 matmul returns bf16): activations, biases and the output are fp32.
        h = reference.encode(coords)
        for i, layer in enumerate(reference.layers):
            exact_first = i == 0 and config.encoding == "none"
            w, x = (layer.weight, h) if exact_first else (layer.weight.bfloat16().float(), h.bfloat16().float())
            z = x @ w.t() + layer.bias
            h = (torch.sin(config.w0 * z) if config.activation == "sine" else torch.relu(z)) \
                if i < len(reference.layers) - 1 else torch.sigmoid(z)
        torch.testing.assert_close(out, h, rtol=4e-3, atol=1e-4)
        out.sum().backward()
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())

    def test_resolve(self):
        config = MLPConfig()
        assert resolve_backend("auto", config, "cpu") == "torch"
        assert resolve_backend("torch", config, "cpu") == "torch"
        assert resolve_backend("compile", config, torch.device("cpu")) == "compile"
        assert resolve_backend("auto", MLPConfig(width=48), "cuda") == "torch"
        if HAS_TRITON:
            assert resolve_backend("auto", config, "cuda") == "triton"
            assert resolve_backend("auto", config, "cuda:0") == "triton"

    def test_a_precision_whose_kernels_faulted_under_a_triton_is_refused_on_a_gpu_there(self, monkeypatch):
        """Triton 3.6's tf32x3 forward faulted on an H200 (an illegal address, which poisons the worker's
        CUDA context): under 3.6 a spec asking for it is refused before a trial starts, and `auto` takes
        torch; other precisions, other Tritons and the CPU are untouched."""
        import importlib.metadata

        from steer.kernels.backends import precision_fault

        assert precision_fault("tf32x3", "3.9.0") is None and precision_fault("tf32", "3.6.0") is None
        reason = precision_fault("tf32x3", "3.6.1")
        assert reason.startswith("precision 'tf32x3' is refused under Triton 3.6.1: its kernels faulted with an "
                                 "illegal memory access in the forward kernel"), reason
        assert reason.endswith("; use fp32, tf32, bf16 (tf32 is the default and within 0.1 dB of fp32), or another "
                               "Triton"), reason
        if not HAS_TRITON:
            return
        installed = importlib.metadata.version
        monkeypatch.setattr(importlib.metadata, "version",
                            lambda name: "3.6.0" if name == "triton" else installed(name))
        config = MLPConfig()
        with pytest.raises(BackendError, match=r"^precision 'tf32x3' is refused under Triton 3\.6\.0"):
            resolve_backend("triton", config, "cuda", "tf32x3")
        assert resolve_backend("auto", config, "cuda", "tf32x3") == "torch"
        assert resolve_backend("triton", config, "cuda", "tf32") == "triton"
        assert resolve_backend("auto", config, "cuda", "bf16") == "triton"
        assert build_model(config, "triton", "cpu", precision="tf32x3")[1] == "triton"  # the interpreter

    def test_cpu_without_interpreter_is_a_clear_error(self, monkeypatch):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(BackendError, match=r"backend 'triton' needs a CUDA device; got device 'cpu'"):
            build_model(MLPConfig(), "triton", "cpu")

    @pytest.mark.parametrize("config, message", [
        (MLPConfig(width=48), r"width=48 .* supported widths: 16, 32, 64, 128"),
        (MLPConfig(width=256), r"width=256 .* supported widths: 16, 32, 64, 128"),
        (MLPConfig(hidden_layers=9), r"hidden_layers=9 .* supported: 1\.\.8"),
        (MLPConfig(encoding="fourier", fourier_features=65), r"fourier_features=65 \(2F=130 .* supported: 1\.\.64"),
        (MLPConfig(out_features=17), r"out_features=17 .* supported: 1\.\.16"),
    ])
    def test_unsupported_shapes_are_clear_errors(self, config, message):
        with pytest.raises(BackendError, match=message):
            resolve_backend("triton", config, "cuda")
        with pytest.raises(BackendError, match=message):
            FusedCoordMLP(config)

    def test_bad_names(self):
        with pytest.raises(BackendError, match=r"backend must be one of auto, torch, compile, triton; got 'cuda'"):
            resolve_backend("cuda", MLPConfig(), "cpu")
        with pytest.raises(BackendError, match=r"precision must be one of fp32, tf32x3, tf32, bf16; got 'fp16'"):
            build_model(MLPConfig(), "torch", "cpu", precision="fp16")
        assert BACKENDS == ("auto", "torch", "compile", "triton")

    def test_compile_matches_reference(self):
        config = MLPConfig(width=16, hidden_layers=1, activation="sine")
        reference = CoordMLP(config, generator=torch.Generator().manual_seed(0))
        compiled = CompiledCoordMLP(config)
        compiled.load_state_dict(reference.state_dict())
        coords = torch.rand(50, 2)
        torch.testing.assert_close(compiled(coords), reference(coords))


@needs_cuda
class TestCompiledKernels:
    """The same checks on a GPU, compiled kernels, at each input precision."""

    CASES = [
        dict(width=16, hidden_layers=1, activation="relu", output="sigmoid", encoding="none", n=1),
        dict(width=32, hidden_layers=2, activation="sine", output="linear", encoding="fourier", n=4099),
        dict(width=64, hidden_layers=3, activation="relu", output="sigmoid", encoding="fourier", n=2**16 + 37),
        dict(width=64, hidden_layers=3, activation="sine", output="sigmoid", encoding="none", n=10_007),
        dict(width=128, hidden_layers=2, activation="sine", output="linear", encoding="fourier", n=4097,
             fourier_features=64),
        dict(width=128, hidden_layers=8, activation="relu", output="sigmoid", encoding="none", n=3001),
        dict(width=32, hidden_layers=8, activation="sine", output="linear", encoding="fourier", n=130,
             fourier_features=5),
    ]

    @pytest.mark.parametrize("precision", ["fp32", "tf32x3", "tf32", "bf16"])
    @pytest.mark.parametrize("case", CASES, ids=_case_id)
    def test_forward_and_gradients(self, case, precision):
        config, n, kernel_kwargs = _split_case(case)
        check_against_reference(config, n, device="cuda", precision=precision, **kernel_kwargs)

    @pytest.mark.parametrize("precision", ["fp32", "tf32x3", "tf32"])
    def test_optimizer_steps_match_reference(self, precision):
        check_training_steps(MLPConfig(width=64, hidden_layers=3, encoding="fourier"), "cuda", precision)

    @pytest.mark.parametrize("precision", ["fp32", "tf32x3", "tf32", "bf16"])
    @pytest.mark.parametrize("loss", ["mse", "huber"])
    def test_the_one_kernel_step(self, precision, loss):
        """Where the model's guard takes the step, it matches the reference; so does a step the guard
        refuses as spilling too much (slower, not wrong); where it refuses it for its shared memory
        (Triton 3.6's tf32x3 step at width 64, 4 layers, on an H200), the launch would indeed fail."""
        from triton.runtime.errors import OutOfResources

        for config, n in ((MLPConfig(width=64, hidden_layers=3, encoding="fourier"), 2**16 + 37),
                          (MLPConfig(width=64, hidden_layers=4, activation="sine"), 4099)):
            refused = make_pair(config, "cuda", precision=precision)[1].step_unsupported_reason(loss)
            if refused is None or refused.startswith("it spills "):
                check_train_step(config, n, loss, "cuda", precision)
                continue
            assert "B of shared memory per block" in refused, refused
            with pytest.raises(OutOfResources):
                check_train_step(config, n, loss, "cuda", precision)

    def test_gradients_are_deterministic(self):
        _, fused = make_pair(MLPConfig(width=64, hidden_layers=3, activation="sine"), "cuda")
        coords = torch.rand(2**16, 2, device="cuda")
        grads = []
        for _ in range(2):
            fused.zero_grad(set_to_none=True)
            fused(coords).square().sum().backward()
            grads.append([p.grad.clone() for p in fused.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*grads))

    def test_auto_picks_triton(self):
        model, resolved = build_model(MLPConfig(), "auto", "cuda")
        assert resolved == "triton" and isinstance(model, FusedCoordMLP)
        assert model.layers[0].weight.is_cuda


@needs_interpreter
def test_the_benchmarks_one_kernel_step_trains_as_its_split_step_does():
    """`python -m steer.kernels.bench --backends triton-step` times the step a trial takes: same losses
    over three Adam steps as forward, MSE and backward through the split kernels."""
    from steer.kernels import bench

    config = MLPConfig(width=16, hidden_layers=1)
    gen = torch.Generator().manual_seed(3)
    coords, target = torch.rand(37, 2, generator=gen) * 2 - 1, torch.rand(37, 3, generator=gen)
    losses = []
    for one_kernel in (False, True):
        step = bench._step_fn(make_pair(config)[1], coords, target, "eager", one_kernel)
        losses.append(torch.stack([step().detach() for _ in range(3)]))
    assert losses[0][0] > losses[0][2]  # it trains
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-6)


@needs_interpreter
def test_the_trainer_asks_once_per_loss_whether_the_one_kernel_step_takes_its_net(monkeypatch):
    """On a GPU the answer costs a compile check and a driver query: asked every step, it took 0.77 ms
    of a 0.115 ms step on an H200. The model keeps it: one question per loss, however many steps."""
    from steer.trainer import LOSS_FNS, Trainer

    asked: list[str] = []
    original = FusedCoordMLP._step_reason
    monkeypatch.setattr(FusedCoordMLP, "_step_reason",
                        lambda self, loss, device: asked.append(loss) or original(self, loss, device))
    params = {"width": 16, "hidden_layers": 1, "activation": "relu", "encoding": "none", "optimizer": "adam",
              "lr": 1e-3, "loss": "mse"}
    trainer = Trainer(params, torch.rand(4, 4, 3), steps=8, seed=0, backend="triton", device="cpu", fused_step=True)
    for loss in ("mse", "mse", "mse", "l1", "l1", "mse"):
        trainer.check(trainer.step(LOSS_FNS[loss]))
    assert asked == ["mse", "l1"]


@needs_interpreter
def test_a_whole_trial_runs_on_the_triton_backend(tmp_path):
    """The trainer and objective on `backend = "triton"`: same PSNR curve as the torch backend."""
    optuna = pytest.importorskip("optuna", reason="a whole trial needs the project installed, not only torch")

    import steer
    from steer import record

    text = """
[study]
name = "{name}"
seed = 3
[target]
image = "card"
size = 8
[trial]
steps = 12
report_every = 4
backend = "{backend}"
precision = "fp32"
[pruner]
type = "none"
[space]
width = 16
encoding = "fourier"
fourier_features = 8
fourier_sigma = 2.0
lr = {{ type = "float", low = 1e-3, high = 1e-2, log = true }}
"""
    curves = {}
    for backend in ("torch", "triton"):
        path = tmp_path / f"{backend}.toml"
        path.write_text(text.format(name=backend, backend=backend))
        spec = steer.load_spec(path)
        study = steer.create_study(spec, f"sqlite:///{tmp_path / 'k.db'}")
        study.enqueue_trial({"lr": 5e-3})
        study.optimize(steer.objective(spec), n_trials=1)
        trial = study.trials[0]
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert record.attrs(trial)["steer.backend"] == backend
        # the triton net (width 16, 2 layers, 8 Fourier features) trains with the one-kernel step, recorded
        assert record.attrs(trial).get("steer.fused_step", False) == (backend == "triton")
        curves[backend] = [trial.intermediate_values[s] for s in (4, 8, 12)]
    assert curves["triton"] == pytest.approx(curves["torch"], abs=1e-3)
    from steer.replay import replay_trial

    assert replay_trial(study, 0)["identical"]  # the same kernels again: the same bits
    assert curves["torch"][-1] > curves["torch"][0]
