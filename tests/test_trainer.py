import math

import pytest
import torch

from steer.image import load_target
from steer.trainer import Change, Diverged, InvalidChange, Trainer

TARGET = load_target("card", 16)


def make(**params) -> Trainer:
    return Trainer(params, TARGET, steps=60, seed=3, backend="torch", device="cpu")


def train(t: Trainer, n: int) -> None:
    for _ in range(n):
        t.step()


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
    train(t, 5)
    before = weights(t)
    event = t.apply(Change("set_optimizer", "SGD"))
    assert (event.old, event.new, event.step) == ("adam", "sgd", 5)
    assert all(torch.equal(x, y) for x, y in zip(before, weights(t)))
    assert isinstance(t.optimizer, torch.optim.SGD) and not t.optimizer.state
    group = t.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["lr"] == t.current_lr and group["weight_decay"] == 1e-4
    train(t, 1)
    assert t.optimizer.state  # momentum buffers exist again after a step


def test_loss_switch_keeps_weights_and_acts_on_next_step():
    a, b = make(), make()
    train(a, 3), train(b, 3)
    before = weights(a)
    event = a.apply(Change("set_loss", "l1"))
    assert (event.old, event.new) == ("mse", "l1")
    assert all(torch.equal(x, y) for x, y in zip(before, weights(a)))
    la, lb = a.step(), b.step()
    assert la != lb  # L1 vs MSE on identical weights
    # PSNR stays MSE-based whatever the training loss.
    mse = torch.mean((a.predict() - TARGET) ** 2).item()
    assert a.psnr() == pytest.approx(10 * math.log10(1 / mse))


def test_set_lr_overrides_cosine_schedule():
    t = make(schedule="cosine", lr=1e-2)
    assert t.current_lr == pytest.approx(1e-2)
    train(t, 30)
    assert t.current_lr == pytest.approx(5e-3)
    event = t.apply(Change("set_lr", 3e-4))
    assert event.old == pytest.approx(5e-3) and event.new == 3e-4
    train(t, 10)
    assert t.current_lr == 3e-4 and t.optimizer.param_groups[0]["lr"] == 3e-4
    assert t.effective_params()["lr"] == 3e-4


def test_weight_decay_and_reset():
    t = make()
    t.apply(Change("set_weight_decay", 0.01))
    assert t.optimizer.param_groups[0]["weight_decay"] == 0.01
    train(t, 5)
    t.apply(Change("reset", 123))
    fresh = Trainer({}, TARGET, steps=60, seed=123, backend="torch", device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(weights(t), weights(fresh)))
    assert t.step_count == 5 and not t.optimizer.state


@pytest.mark.parametrize("change, reason", [
    (Change("set_lr", float("nan")), "lr: got nan"),
    (Change("set_lr", 5.0), "lr: got 5.0; allowed: float in [1e-07, 1]"),
    (Change("set_lr", "fast"), "lr: got 'fast'; expected a number"),
    (Change("set_optimizer", "rmsprop"), "optimizer: got 'rmsprop'; allowed: adam | sgd | adamw"),
    (Change("set_loss", "ssim"), "loss: got 'ssim'; allowed: mse | l1 | huber"),
    (Change("set_weight_decay", -1), "weight_decay: got -1; allowed: float in [0, 1]"),
    (Change("reset", -2), "reset needs a non-negative integer seed"),
    (Change("explode"), "unknown action 'explode'"),
])
def test_invalid_changes_are_rejected_without_touching_state(change, reason):
    t = make()
    train(t, 2)
    before = (weights(t), t.current_lr, t.optimizer_name, t.loss_name, t.weight_decay)
    with pytest.raises(InvalidChange, match=reason.replace("[", r"\[").replace("(", r"\(")):
        t.apply(change)
    after = (weights(t), t.current_lr, t.optimizer_name, t.loss_name, t.weight_decay)
    assert all(torch.equal(x, y) for x, y in zip(before[0], after[0])) and before[1:] == after[1:]


def test_random_batches_and_divergence():
    t = make(batch_size=50)
    train(t, 3)
    assert t.step_count == 3
    bad = TARGET.clone()
    bad[0, 0, 0] = float("nan")
    d = Trainer({}, bad, steps=5, seed=0, backend="torch", device="cpu")
    with pytest.raises(Diverged, match="training loss became nan at step 1"):
        d.step()
