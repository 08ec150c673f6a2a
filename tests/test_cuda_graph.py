"""Training steps captured as CUDA graphs (steer.cuda_graph): the same arithmetic as eager steps,
through every kind of steering change. The GPU tests run under `make gpu-check`; on the CPU the
option must change nothing."""

from __future__ import annotations

import pytest
import torch

from steer.steering import Steering
from steer.trainer import Trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")

PARAMS = dict(width=32, hidden_layers=2, activation="relu", encoding="fourier", fourier_features=8,
              fourier_sigma=5.0, optimizer="adam", lr=2e-3, loss="mse", schedule="cosine", weight_decay=0.0)

# Every kind of change a person makes, at steps that leave the graph time to be captured between them.
CHANGES = {
    6: ("set_lr", {"value": 5e-4}),
    12: ("set_weight_decay", {"value": 1e-4}),
    18: ("set_optimizer", {"value": "sgd"}),
    24: ("set_lr", {"value": 1e-2}),
    30: ("set_loss", {"value": "l1"}),
    36: ("reset", {"seed": 5}),
    42: ("set_optimizer", {"value": "adamw"}),
    48: ("set_loss", {"value": "huber"}),
}
STEPS = 60


def train(device: str, cuda_graph: bool, capture: bool = True, backend: str = "torch", batch_size: int = 0,
          target: torch.Tensor | None = None) -> tuple[Trainer, list[float]]:
    """STEPS steps with CHANGES applied through steering's own handlers; the loss of every step."""
    if target is None:
        target = torch.rand(24, 20, 3, generator=torch.Generator().manual_seed(1))
    trainer = Trainer({**PARAMS, "batch_size": batch_size}, target, steps=STEPS, seed=3, backend=backend,
                      device=device, cuda_graph=cuda_graph)
    if trainer.graph is not None:
        trainer.graph.capture = capture
    knobs = Steering(None, **trainer.steering_kwargs())
    losses = []
    while trainer.step_count < STEPS:
        if trainer.step_count in CHANGES:
            knobs.apply(*CHANGES[trainer.step_count])
        losses.append(trainer.step(knobs.loss_fn))
    return trainer, [trainer.check(loss) for loss in losses]


def weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().cpu() for p in trainer.model.parameters()]


def test_cuda_graph_changes_nothing_on_the_cpu():
    plain, plain_losses = train("cpu", cuda_graph=False, batch_size=100)
    asked, asked_losses = train("cpu", cuda_graph=True, batch_size=100)
    assert asked.graph is None
    assert asked_losses == plain_losses
    assert all(torch.equal(a, b) for a, b in zip(weights(asked), weights(plain)))


@needs_cuda
class TestCompiledCudaGraph:
    """On a GPU: captured steps against the same steps run eagerly."""

    @pytest.mark.parametrize("backend", ["torch", "triton"])
    @pytest.mark.parametrize("batch_size", [0, 256])
    def test_graph_steps_match_eager_steps_through_every_change(self, backend, batch_size):
        eager, eager_losses = train("cuda", cuda_graph=True, capture=False, backend=backend, batch_size=batch_size)
        graphed, graphed_losses = train("cuda", cuda_graph=True, backend=backend, batch_size=batch_size)
        assert eager.graph.captures == 0
        # One capture at the start and one after each change that a graph bakes in (not set_lr).
        rebaked = sum(action != "set_lr" for action, _ in CHANGES.values())
        assert graphed.graph.captures == 1 + rebaked, graphed.graph.failed
        # The same kernels with the same arguments: the same bits, step by step.
        assert graphed_losses == eager_losses
        assert all(torch.equal(a, b) for a, b in zip(weights(graphed), weights(eager)))

    def test_graph_trains_like_the_plain_optimizers(self):
        """Against a trainer without graphs (foreach, not fused, optimizers): the same training up to
        rounding. Before the first SGD step (step 18) the two agree closely; a graph that missed the
        cosine schedule or the set_lr at step 6 would not."""
        graphed, graphed_losses = train("cuda", cuda_graph=True)
        plain, plain_losses = train("cuda", cuda_graph=False)
        assert graphed.optimizer.param_groups[0]["lr"] == graphed.current_lr  # a float again between steps
        assert graphed_losses[:18] == pytest.approx(plain_losses[:18], rel=1e-3)

    @pytest.mark.parametrize("backend", ["torch", "triton"])
    def test_an_lr_range_test_leaves_a_graphed_trial_unchanged(self, backend):
        """find-lr tests copies (fused, capturable optimizers included) while the trial waits: the trial's
        captured steps go on bit for bit as if it had never run, CUDA RNG included."""
        target = torch.rand(24, 20, 3, generator=torch.Generator().manual_seed(1))
        runs = []
        for with_test in (False, True):
            trainer = Trainer({**PARAMS, "batch_size": 256}, target, steps=STEPS, seed=3, backend=backend,
                              device="cuda", cuda_graph=True)
            losses = []
            while trainer.step_count < STEPS:
                if with_test and trainer.step_count == 20:
                    test = trainer.find_lr()
                    assert len(test.lrs) >= 10 and test.suggestion is not None, test.reason
                losses.append(trainer.step())
            runs.append(([trainer.check(loss) for loss in losses], weights(trainer), trainer.graph.captures))
        assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2] == 1
        assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
