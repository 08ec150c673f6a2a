import math

import pytest
import torch

from steer import actions
from steer.image import load_target
from steer.steering import InvalidChange, Steering
from steer.trainer import Diverged, Trainer

TARGET = load_target("card", 16)


def make(**params) -> Trainer:
    return Trainer(params, TARGET, steps=60, seed=3, backend="torch", device="cpu")


def knobs(t: Trainer) -> Steering:
    """The trainer's steering object with no trial: what replay uses to apply recorded changes."""
    return Steering(None, **t.steering_kwargs())


def train(t: Trainer, n: int, s: Steering | None = None) -> None:
    for _ in range(n):
        t.step(s.loss_fn if s else None)


def weights(t: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.model.parameters()]


def test_psnr_rises_on_a_tiny_image():
    t = make(encoding="fourier", fourier_sigma=3.0, lr=5e-3)
    before = t.psnr()
    train(t, 60)
    assert t.psnr() > before + 3.0


def test_same_seed_same_result_bitwise_and_other_seed_differs():
    a, b = make(), make()
    train(a, 20), train(b, 20)
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    assert a.psnr() == b.psnr()
    c = Trainer({}, TARGET, steps=60, seed=4, backend="torch", device="cpu")
    assert not torch.equal(weights(a)[0], weights(c)[0])


def test_optimizer_switch_keeps_weights_resets_state_carries_lr_and_wd():
    t = make(weight_decay=1e-4)
    s = knobs(t)
    train(t, 5, s)
    before = weights(t)
    held = t.optimizer  # what a training loop holds: switched in place, so it stays valid
    old, new = s.apply("set_optimizer", actions.arguments(actions.get("set_optimizer"), value="SGD", trial=0))
    assert (old, new, t.step_count) == ("adam", "sgd", 5)
    assert all(torch.equal(x, y) for x, y in zip(before, weights(t)))
    assert held is t.optimizer and isinstance(held, torch.optim.SGD) and not t.optimizer.state
    group = t.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["lr"] == t.current_lr and group["weight_decay"] == 1e-4
    train(t, 1, s)
    assert t.optimizer.state  # momentum buffers exist again after a step


def test_loss_switch_keeps_weights_and_acts_on_next_step():
    a, b = make(), make()
    sa = knobs(a)
    train(a, 3, sa), train(b, 3)
    before = weights(a)
    assert sa.apply("set_loss", {"value": "l1"}) == ("mse", "l1")
    assert all(torch.equal(x, y) for x, y in zip(before, weights(a)))
    la, lb = a.step(sa.loss_fn), b.step()
    assert la != lb  # L1 vs MSE on identical weights
    # PSNR stays MSE-based whatever the training loss.
    mse = torch.mean((a.predict() - TARGET) ** 2).item()
    assert a.psnr() == pytest.approx(10 * math.log10(1 / mse))


def test_set_lr_overrides_cosine_schedule():
    t = make(schedule="cosine", lr=1e-2)
    s = knobs(t)
    assert t.current_lr == pytest.approx(1e-2)
    train(t, 30, s)
    assert t.current_lr == pytest.approx(5e-3)
    old, new = s.apply("set_lr", {"value": 3e-4})
    assert old == pytest.approx(5e-3) and new == 3e-4
    train(t, 10, s)
    assert t.current_lr == 3e-4 and t.optimizer.param_groups[0]["lr"] == 3e-4
    assert s.effective_params()["lr"] == 3e-4 and s.effective_params()["schedule"] == "constant"


def test_weight_decay_and_reset():
    t = make()
    s = knobs(t)
    s.apply("set_weight_decay", {"value": 0.01})
    assert t.optimizer.param_groups[0]["weight_decay"] == 0.01
    train(t, 5, s)
    s.apply("reset", {"seed": 123})
    fresh = Trainer({}, TARGET, steps=60, seed=123, backend="torch", device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(weights(t), weights(fresh)))
    assert t.step_count == 5 and not t.optimizer.state


@pytest.mark.parametrize("action, value, reason", [
    ("set_lr", float("nan"), "lr: got nan"),
    ("set_lr", 5.0, "lr: got 5.0; allowed: float in [1e-07, 1]"),
    ("set_lr", "fast", "lr: got 'fast'; expected a number"),
    ("set_optimizer", "rmsprop", "optimizer: got 'rmsprop'; allowed: adam | sgd | adamw"),
    ("set_loss", "ssim", "loss: got 'ssim'; allowed: mse | l1 | huber"),
    ("set_weight_decay", -1, "weight_decay: got -1.0; allowed: float in [0, 1]"),
    ("reset", -2, "reset seed must be a non-negative integer"),
])
def test_invalid_values_are_rejected_by_the_action_table(action, value, reason):
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("(", r"\(")):
        actions.arguments(actions.get(action), value=value, trial=0)


def test_unknown_action_and_unknown_names_leave_the_trainer_untouched():
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        actions.get("explode")
    t = make()
    s = knobs(t)
    train(t, 2, s)
    before = (weights(t), t.current_lr, s.optimizer_name, s.loss_name, s.weight_decay)
    for action, args, reason in (("set_optimizer", {"value": "rmsprop"}, "optimizer: got 'rmsprop'"),
                                 ("set_loss", {"value": "ssim"}, "loss: got 'ssim'"),
                                 ("explode", {}, "action 'explode' cannot be applied by a trial")):
        with pytest.raises(InvalidChange, match=reason):
            s.apply(action, args)
    after = (weights(t), t.current_lr, s.optimizer_name, s.loss_name, s.weight_decay)
    assert all(torch.equal(x, y) for x, y in zip(before[0], after[0])) and before[1:] == after[1:]


def test_random_batches_and_divergence():
    t = make(batch_size=50)
    train(t, 3)
    assert t.step_count == 3
    bad = TARGET.clone()
    bad[0, 0, 0] = float("nan")
    d = Trainer({}, bad, steps=5, seed=0, backend="torch", device="cpu")
    loss = d.step()
    assert isinstance(loss, torch.Tensor) and not loss.requires_grad  # read when the caller reports
    d.step()
    with pytest.raises(Diverged, match="training loss became nan by step 2"):
        d.check(loss)
    assert d.check(t.step()) > 0  # a finite loss reads back as its value


def test_a_graphs_key_changes_whenever_the_optimizer_state_is_replaced():
    """Undo then reset between two steps replace `optimizer.state` twice; the second new dict must not
    take the id of the dict the graph was keyed on (CPython reuses a freed dict's memory at once)."""
    import collections

    trainer = make()
    loss_fn = torch.nn.functional.mse_loss
    keys = []
    for _ in range(20):
        keys.append(trainer._graph_key(loss_fn))
        trainer.optimizer.state = collections.defaultdict(dict)  # an undo's load_state_dict ...
        trainer.optimizer.state = collections.defaultdict(dict)  # ... then a reset, before the next step
        assert trainer._graph_key(loss_fn) != keys[-1]
