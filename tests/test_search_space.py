"""Space edits and hints, the rules (steer.search_space): what a request may ask, and how a hint draws."""

from __future__ import annotations

import math

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from steer import search_space as sp
from steer.spec import Dimension

LR = Dimension("lr", "float", low=1e-4, high=1e-1, log=True)
WD = Dimension("weight_decay", "float", low=0.0, high=0.01)
WIDTH = Dimension("width", "int", low=16, high=128, step=16)
OPT = Dimension("optimizer", "categorical", choices=("adam", "sgd"))


def test_edit_narrows_and_widens_within_the_kind():
    assert sp.check_edit(LR, {"low": "1e-3", "high": 1e-2}) == Dimension("lr", "float", low=1e-3, high=1e-2, log=True)
    assert sp.check_edit(LR, {"high": 0.5}).high == 0.5  # wider than the spec: allowed, lr allows up to 1
    assert sp.check_edit(WIDTH, {"low": 32}) == Dimension("width", "int", low=32, high=128, step=16)
    assert sp.check_edit(OPT, {"choices": " SGD "}).choices == ("sgd",)
    assert sp.check_edit(LR, {"reset": True}) is None
    features = Dimension("fourier_features", "categorical", choices=(16, 32, 64))  # numbers searched as choices
    assert sp.check_edit(features, {"choices": "32,64"}).choices == (32, 64)
    assert sp.check_hint(features, "32", 1, 1)["value"] == 32


@pytest.mark.parametrize("dim, options, words", [
    (LR, {"low": 1e-2, "high": 1e-3}, "below --high"),
    (LR, {"low": 1e-2, "high": 1e-2}, "empty or inverted"),
    (LR, {"low": 0.0}, "allowed: float in [1e-07, 1]"),  # lr itself is never 0
    (Dimension("weight_decay", "float", low=1e-6, high=1e-2, log=True), {"low": 0}, "log scale"),
    (LR, {"high": 5.0}, "--high"),  # beyond what lr allows at all
    (LR, {"low": "abc"}, "expected a number"),
    (LR, {"low": "nan"}, "finite"),
    (LR, {"choices": "adam"}, "not --choices"),
    (OPT, {"low": 1}, "takes --choices"),
    (OPT, {"choices": "adam,rmsprop"}, "rmsprop"),
    (OPT, {"choices": "adam,adamw"}, "can only narrow"),  # adamw: a name lr allows, but not in this spec's list
    (OPT, {"choices": " , "}, "empty"),
    (OPT, {"choices": "adam,adam"}, "duplicates"),
    (WIDTH, {"low": 20.5}, "integer"),
    (LR, {}, "give --low/--high"),
    (LR, {"reset": True, "low": 1e-3}, "--reset takes no other"),
])
def test_bad_edits_say_what_is_wrong(dim, options, words):
    with pytest.raises(ValueError, match="space " + dim.name) as err:
        sp.check_edit(dim, options)
    assert words in str(err.value)


def test_hint_checks():
    assert sp.check_hint(LR, "1e-3", "0.5", "5") == {"value": 1e-3, "strength": 0.5, "trials": 5}
    assert sp.check_hint(OPT, "SGD", 1, 1)["value"] == "sgd"
    for value, strength, trials, words in [(1.0, 1, 5, "outside"), (1e-3, 1.5, 5, "--strength"),
                                           (1e-3, -0.1, 5, "--strength"), (1e-3, 1, 0, "--trials"),
                                           (1e-3, 1, 2.5, "--trials"), ("x", 1, 5, "expected a number")]:
        with pytest.raises(ValueError, match=words):
            sp.check_hint(LR, value, strength, trials)
    with pytest.raises(ValueError, match="rmsprop"):
        sp.check_hint(OPT, "rmsprop", 1, 5)
    with pytest.raises(ValueError, match="outside"):
        sp.check_hint(OPT, "adamw", 1, 5)  # allowed for the param, but not among this space's choices


def test_hint_probability_decays_over_its_trials():
    hint = {"strength": 0.8, "trials": 4, "first_trial": 10}
    assert [sp.hint_probability(hint, n) for n in range(9, 16)] == pytest.approx([0, 0.8, 0.6, 0.4, 0.2, 0, 0])


def test_draws_near_the_hint():
    rng = sp.hint_rng(0, 3, "lr")
    lr = FloatDistribution(1e-5, 1.0, log=True)
    draws = [sp.draw_near(lr, 1e-3, rng) for _ in range(2000)]
    within = sum(0.5e-3 <= x <= 2e-3 for x in draws) / len(draws)
    assert within == pytest.approx(0.988, abs=0.01)  # P(|Z| < 2.5)
    assert all(lr.low <= x <= lr.high for x in draws)
    edge = [sp.draw_near(FloatDistribution(1e-3, 1e-2, log=True), 1e-3, rng) for _ in range(200)]
    assert min(edge) >= 1e-3  # drawn again (then clipped) inside the range
    ints = [sp.draw_near(IntDistribution(16, 128, step=16), 64, rng) for _ in range(200)]
    assert set(ints) <= set(range(16, 129, 16)) and ints.count(64) > 100
    choices = [sp.draw_near(CategoricalDistribution(["adam", "sgd", "adamw"]), "sgd", rng) for _ in range(4000)]
    assert choices.count("sgd") / 4000 == pytest.approx(0.75, abs=0.03)


def test_hint_draws_repeat_for_the_same_study_seed_and_trial():
    lr = FloatDistribution(1e-5, 1.0, log=True)
    assert sp.draw_near(lr, 1e-3, sp.hint_rng(7, 3, "lr")) == sp.draw_near(lr, 1e-3, sp.hint_rng(7, 3, "lr"))
    assert sp.draw_near(lr, 1e-3, sp.hint_rng(7, 3, "lr")) != sp.draw_near(lr, 1e-3, sp.hint_rng(7, 4, "lr"))


def test_dimensions_round_trip():
    for dim in (LR, WD, WIDTH, OPT):
        assert sp.from_dict(dim.name, sp.to_dict(dim)) == dim
        assert sp.from_distribution(dim.name, sp.distribution(dim)) == dim
    assert math.isclose(sp.distribution(LR).low, 1e-4)
