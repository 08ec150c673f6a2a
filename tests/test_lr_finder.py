"""The LR range test on real (tiny) torch models, on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from steer.lr_finder import RangeTest, range_test


def problem(seed: int = 0):
    """A small MLP, a fixed random regression problem and its loss function."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        return torch.nn.functional.mse_loss(m(x), y)

    return model, loss_fn


def test_adam_curve_and_suggestion():
    model, loss_fn = problem()
    optimizer = torch.optim.Adam(model.parameters())
    result = range_test(model, optimizer, loss_fn, lr_min=1e-5, lr_max=1.0, steps=60)

    assert result.steps == 60 or "diverged" in result.reason
    assert len(result.lrs) == len(result.losses) == result.steps
    assert result.lrs[0] == pytest.approx(1e-5)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios == pytest.approx([(1.0 / 1e-5) ** (1 / 59)] * len(ratios))  # exponential: a constant ratio
    if result.steps == 60:
        assert result.reason == "reached lr_max" and result.lrs[-1] == pytest.approx(1.0)

    assert result.suggestion is not None, result.reason
    assert 1e-5 <= result.suggestion <= 1.0
    at = result.lrs.index(result.suggestion)
    assert result.losses[at] < result.losses[0]
    assert result.losses[at + 1] < result.losses[at - 1]  # the loss is falling there
    assert "steepest" in result.rule

    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert RangeTest(**data) == result


def test_sgd_with_a_large_lr_max_diverges():
    model, loss_fn = problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    result = range_test(model, optimizer, loss_fn, lr_min=1e-4, lr_max=10.0, steps=100)

    assert result.steps < 100
    assert "diverged at lr=" in result.reason
    assert all(math.isfinite(v) for v in result.losses)
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.Adam(ps, lr=1e-3),
    lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01),  # its defaults hold more than it takes
    lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9),
], ids=["adam", "adamw", "sgd"])
def test_caller_state_and_rng_are_left_unchanged(make):
    model, loss_fn = problem()
    optimizer = make(model.parameters())
    for _ in range(3):  # give Adam moments and a step count
        optimizer.zero_grad()
        loss_fn(model).backward()
        optimizer.step()
    model_before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [p.grad.clone() for p in model.parameters()]
    opt_before = optimizer.state_dict()
    opt_before = {
        "state": {i: {k: v.clone() for k, v in s.items()} for i, s in opt_before["state"].items()},
        "param_groups": [dict(g) for g in opt_before["param_groups"]],
    }
    rng_before = torch.get_rng_state()

    def noisy_loss(m: torch.nn.Module) -> torch.Tensor:  # draws from the global RNG, like a data loader would
        return loss_fn(m) + 0.01 * torch.randn(()).abs()

    range_test(model, optimizer, noisy_loss, lr_min=1e-6, lr_max=10.0, steps=30)

    assert torch.equal(torch.get_rng_state(), rng_before)
    after = model.state_dict()
    assert after.keys() == model_before.keys()
    assert all(torch.equal(after[k], v) for k, v in model_before.items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads_before))
    opt_after = optimizer.state_dict()
    assert opt_after["param_groups"] == opt_before["param_groups"]
    assert opt_after["state"].keys() == opt_before["state"].keys()
    for i, state in opt_before["state"].items():
        assert opt_after["state"][i].keys() == state.keys()
        assert all(torch.equal(opt_after["state"][i][k], v) for k, v in state.items())


def test_copy_starts_from_the_trial_optimizer_state():
    model, loss_fn = problem()
    optimizer = torch.optim.SGD([
        {"params": model[0].parameters(), "momentum": 0.9},
        {"params": model[2].parameters(), "momentum": 0.5, "weight_decay": 1e-4},
    ], lr=0.01)
    optimizer.zero_grad()
    loss_fn(model).backward()
    optimizer.step()
    result = range_test(model, optimizer, loss_fn, lr_min=1e-5, lr_max=0.1, steps=20)
    assert result.steps == 20 and len(result.losses) == 20


def test_a_loss_that_never_falls_gives_no_suggestion():
    model, _ = problem()
    optimizer = torch.optim.Adam(model.parameters())

    def constant(m: torch.nn.Module) -> torch.Tensor:
        return sum((p * 0).sum() for p in m.parameters()) + 1.0

    result = range_test(model, optimizer, constant, steps=50)
    assert result.suggestion is None
    assert result.reason.startswith("reached lr_max")
    assert "never fell" in result.reason
    assert result.losses == pytest.approx([1.0] * 50)


def test_too_few_points_gives_no_suggestion():
    model, loss_fn = problem()
    optimizer = torch.optim.Adam(model.parameters())
    result = range_test(model, optimizer, loss_fn, lr_min=1e-5, lr_max=1e-3, steps=10)
    assert result.suggestion is None
    assert "usable points" in result.reason


@pytest.mark.parametrize("kwargs, name", [
    ({"lr_min": 0.0}, "lr_min"),
    ({"lr_min": -1e-3}, "lr_min"),
    ({"lr_min": 1.0, "lr_max": 0.5}, "lr_max"),
    ({"lr_max": math.inf}, "lr_max"),
    ({"steps": 9}, "steps"),
    ({"steps": 10001}, "steps"),
    ({"smoothing": 0.0}, "smoothing"),
    ({"smoothing": 1.5}, "smoothing"),
    ({"diverge_factor": 1.0}, "diverge_factor"),
])
def test_bad_arguments(kwargs, name):
    model, loss_fn = problem()
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match=name):
        range_test(model, optimizer, loss_fn, **kwargs)


def test_a_trained_net_gets_the_edge_of_its_flat_curve():
    """A trained net's curve is flat until the LR is too large; its steepest point is noise (the steep rule
    once said 7e-6 for a trial training well at 1.6e-3). The edge rule says a third of the largest LR
    before the loss rose 10% above its minimum."""
    from steer.lr_finder import RULE_EDGE

    torch.manual_seed(0)
    x = 3 * torch.randn(256, 8)  # curvature about 18: plain SGD diverges above an LR of about 0.1
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(256, 1)  # a minimum a linear model reaches
    model = torch.nn.Linear(8, 1)

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        return torch.nn.functional.mse_loss(m(x), y)

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    for _ in range(1000):
        optimizer.zero_grad()
        loss_fn(model).backward()
        optimizer.step()
    test = range_test(model, optimizer, loss_fn)
    assert test.rule == RULE_EDGE, test
    edge = test.suggestion * 3
    i = test.lrs.index(edge)
    assert max(test.losses[: i + 1]) <= 1.1 * min(test.losses) < test.losses[i + 1]
