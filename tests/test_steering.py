"""`steer.steering` on plain PyTorch objects: what each action does to an optimizer and a model, and
what a step costs. In-process, on a real SQLite study."""

from __future__ import annotations

import optuna
import pytest
import torch
from sqlalchemy import event

import steer
from steer import record
from steer.control import Control
from steer.steering import InvalidChange, Steering, reset_weights
from steer.storage import open_storage


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def test_set_lr_keeps_per_group_ratios_and_a_scheduler_follows():
    model = net()
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 1e-2},
                           {"params": model[2].parameters(), "lr": 1e-3}], lr=1e-2)
    s = Steering(None, opt, model=model)
    assert s.apply("set_lr", {"value": 1e-1}) == (1e-2, 1e-1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-1, 1e-2])  # per-layer ratio kept
    single = torch.optim.Adam(net().parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(single, step_size=1, gamma=0.5)
    Steering(None, single).apply("set_lr", {"value": 4e-3})
    single.step(), scheduler.step()
    assert single.param_groups[0]["lr"] == pytest.approx(2e-3)  # the schedule continues from the set LR


def test_set_optimizer_switches_in_place_so_the_loop_and_its_scheduler_keep_working():
    model = net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    assert opt.state
    s = Steering(None, opt, model=model)
    assert s.apply("set_optimizer", {"value": "sgd"}) == ("adamw", "sgd")
    assert isinstance(opt, torch.optim.SGD) and not opt.state  # the same object; state starts afresh
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 0.05
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step(), scheduler.step()  # the scheduler holds `opt`: still valid, `initial_lr` kept
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(InvalidChange, match="optimizer: got 'lbfgs'; allowed: adam | sgd | adamw"):
        s.apply("set_optimizer", {"value": "lbfgs"})


def test_reset_is_seeded_for_any_model_and_needs_one():
    a, b = net(), net()
    with torch.no_grad():
        a[0].weight.add_(1.0)
    reset_weights(a, 7), reset_weights(b, 7)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    opt = torch.optim.Adam(a.parameters())
    with pytest.raises(InvalidChange, match="reset needs the model"):
        Steering(None, opt).apply("reset", {"seed": 1})


def test_set_loss_needs_named_losses_and_the_loop_reads_the_current_one():
    s = Steering(None, torch.optim.SGD(net().parameters(), lr=0.1), losses={"a": torch.nn.functional.l1_loss,
                                                                          "b": torch.nn.functional.mse_loss}, loss="a")
    assert s.loss_fn is torch.nn.functional.l1_loss
    s.apply("set_loss", {"value": "b"})
    assert s.loss_fn is torch.nn.functional.mse_loss and s.settings()["loss"] == "b"
    with pytest.raises(steer.UserError, match="loss 'c' is not among the losses"):
        Steering(None, torch.optim.SGD(net().parameters(), lr=0.1), loss="c")


def test_a_step_between_polls_costs_no_query(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    trial = study.ask()
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True))
    statements: list[str] = []
    engine = Control.open(study).db.engine
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with steer.steering(trial, optimizer=opt, model=model,
                        poll_interval=3600, publish_interval=3600) as s:
        s.step(1, loss=torch.tensor(0.5))  # the first step polls and publishes
        first = len(statements)
        assert first > 0
        for step in range(2, 2002):
            s.step(step, loss=torch.tensor(0.5), preview=lambda: pytest.fail("previews are made only to publish"))
        assert len(statements) == first
    frozen = study.trials[0]
    assert record.attrs(frozen)[record.FINAL_STEP] == 2001
    assert record.attrs(frozen)[record.EFFECTIVE_PARAMS] == {"lr": frozen.params["lr"], "optimizer": "adam",
                                                           "weight_decay": 0.0}


def test_an_in_memory_study_trains_unsteered(caplog):
    study = optuna.create_study()

    def objective(trial):
        opt = torch.optim.SGD(net().parameters(), lr=trial.suggest_float("lr", 1e-3, 1e-1))
        with steer.steering(trial, optimizer=opt) as s:
            s.step(1, loss=0.1)
            assert s.control is None
        return 0.0

    study.optimize(objective, n_trials=1)
    assert "trains unsteered" in caplog.text and study.trials[0].state.name == "COMPLETE"


def test_a_trials_changes_become_its_params_when_it_ends(tmp_path):
    """What trained, as Optuna params: the sampled values, then each change at its step (the last of two
    at one step), so `best_params` of a steered trial says how to train it again."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat=False))
    trial = study.ask()
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True))
    control = Control.open(study)
    for action, value in (("set_lr", 1e-2), ("set_lr", 3e-3), ("set_optimizer", "sgd")):
        control.request(action, trial=0, value=value, by="tester")
    with steer.steering(trial, optimizer=opt, model=model, poll_interval=0, publish_interval=3600) as s:
        for step in range(1, 6):
            s.step(step, loss=0.5)
            assert not any(record.is_scheduled(k) for k in trial.params)  # added at the end, all known then
            if step == 3:
                control.request("undo", trial=0, by="tester")
    study.tell(trial, 0.5)
    done = study.trials[0]
    assert [c.state for c in control.commands(trial=0)] == ["applied"] * 4
    assert {k: v for k, v in done.params.items() if k != "lr"} == {"lr@1": 3e-3, "optimizer@1": "sgd", "undo@4": 1}
    assert study.best_params == done.params
    assert done.distributions["lr@1"] == optuna.distributions.FloatDistribution(1e-7, 1.0, log=True)  # any LR
    assert done.distributions["optimizer@1"].choices == ("adam", "adamw", "sgd")
