from pathlib import Path

import pytest

from steer.errors import SpecError
from steer.spec import DEFAULT_PARAMS, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["quick.toml", "image.toml"])
def test_shipped_specs_load(name):
    spec = load_spec(ROOT / "studies" / name)
    assert spec.steps > 0 and spec.space
    assert spec.default_storage.endswith(f"studies/{spec.name}.db")


def test_tiny_spec_fields(tiny_spec):
    spec = load_spec(tiny_spec)
    assert (spec.name, spec.size, spec.steps, spec.report_every) == ("tiny", 16, 30, 10)
    assert [d.name for d in spec.space] == ["lr", "activation", "w0"]
    lr = spec.space[0]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-3, 1e-2, True)
    assert spec.sampler == {"type": "tpe", "steered": "exclude"} and spec.pruner == {"type": "none"}
    assert spec.trial_seed is None and spec.schedule == ()


def test_fixed_values_and_defaults(write_spec):
    spec = load_spec(write_spec(extra='width = 32\noptimizer = "AdamW"\n'))
    assert spec.fixed == {"width": 32, "optimizer": "adamw"}
    assert DEFAULT_PARAMS["lr"] == 2e-3 and DEFAULT_PARAMS["hidden_layers"] == 2


def test_overrides_recheck_values(tiny_spec):
    spec = load_spec(tiny_spec).with_overrides(steps=5, trials=None)
    assert spec.steps == 5 and spec.report_every == 5 and spec.trials == 3
    with pytest.raises(SpecError, match="--steps must be >= 1, got 0"):
        load_spec(tiny_spec).with_overrides(steps=0)


def _error(write_spec, text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(text))
    return str(info.value)


BASE = '[study]\nname = "x"\n[trial]\nsteps = 10\n'


@pytest.mark.parametrize("text, expected", [
    ("[trial]\nsteps = 10\n", "missing [study] table"),
    (BASE.replace('name = "x"', 'name = "x"\nbogus = 1'), "[study]: unknown key(s): bogus"),
    (BASE + "[colour]\n", "[spec]: unknown key(s): colour"),
    (BASE.replace("steps = 10", 'steps = "ten"'), "[trial] steps: must be int, got str 'ten'"),
    (BASE.replace("steps = 10", "steps = 0"), "[trial] steps: must be >= 1, got 0"),
    (BASE + "report_every = 20\n", "[trial] report_every: must be <= steps (10), got 20"),
    (BASE + 'backend = "cuda"\n', "[trial] backend: got 'cuda'; allowed: auto | torch | compile | triton"),
    (BASE + "[space]\nlr = { type = \"float\", low = 1e-2, high = 1e-3 }\n",
     "[space.lr] high: must be greater than low (0.01), got 0.001"),
    (BASE + "[space]\nlr = { type = \"float\", low = 1e-3, high = 1e-3 }\n", "[space.lr] high: must be greater than low"),
    (BASE + "[space]\nlr = { type = \"float\", low = 0.0, high = 1e-3, log = true }\n",
     "[space.lr] low: got 0.0; allowed: float in [1e-07, 1]"),
    (BASE + "[space]\nlr = { type = \"float\", low = 1e-3, high = 5.0 }\n", "[space.lr] high: got 5.0; allowed: float in [1e-07, 1]"),
    (BASE + "[space]\nlr = { type = \"float\", low = 1e-3 }\n", "[space.lr] high: is required"),
    (BASE + "[space]\nlr = { type = \"float\", low = 1e-3, high = 1e-2, lo = 1 }\n", "[space.lr]: unknown key(s): lo"),
    (BASE + "[space]\nlr = { type = \"gaussian\", low = 1e-3, high = 1e-2 }\n",
     "[space.lr] type: got 'gaussian'; allowed: float | int | categorical"),
    (BASE + "[space]\noptimizer = { type = \"categorical\", choices = [] }\n", "[space.optimizer] choices: must not be empty"),
    (BASE + "[space]\noptimizer = { type = \"categorical\", choices = [\"adam\", \"rmsprop\"] }\n",
     "[space.optimizer] choices: got 'rmsprop'; allowed: adam | sgd | adamw"),
    (BASE + "[space]\noptimizer = { type = \"float\", low = 1, high = 2 }\n", "use type = \"categorical\""),
    (BASE + "[space]\nwidth = { type = \"float\", low = 16, high = 64 }\n", "width is an integer parameter"),
    (BASE + "[space]\ndepth = 3\n", "[space] depth: unknown parameter; known: lr, optimizer"),
    (BASE + "[space]\nhidden_layers = 9\n", "[space] hidden_layers: got 9; allowed: int in [1, 8]"),
    (BASE + "[space]\nlr = nan\n", "[space] lr: got nan"),
    (BASE + "[sampler]\ntype = \"cmaes\"\n", "[sampler] type: got 'cmaes'; allowed: tpe | random | grid"),
    (BASE + "[pruner]\ntype = \"median\"\npatience = 3\n", "[pruner]: unknown key(s): patience"),
    (BASE + "[sampler]\nsteered = \"ignore\"\n", "[sampler] steered: got 'ignore'; allowed: exclude | sampled"),
    ("changes = 3\n" + BASE, "changes: must be an array of tables ([[changes]]), got int"),
    (BASE + "[[changes]]\nstep = 2\naction = \"prune\"\n",
     "[changes #1] action: got 'prune'; allowed: set_lr | set_optimizer | set_loss | set_weight_decay | reset"),
    (BASE + "[[changes]]\nstep = 2\naction = \"set_lr\"\nvalue = 5.0\n", "[changes #1] value: lr: got 5.0"),
    (BASE + "[[changes]]\nstep = 2\naction = \"set_lr\"\n", "[changes #1] value: is required"),
    (BASE + "[[changes]]\nstep = 99999\naction = \"reset\"\n", "[changes #1] step: must be in [0, "),
    (BASE + "[[changes]]\nstep = 2\naction = \"reset\"\n[[changes]]\nstep = 1\naction = \"reset\"\n",
     "[changes #2] step: must not be before the previous change's step (2), got 1"),
    (BASE + "[[changes]]\nstep = 1\naction = \"set_loss\"\nvalue = \"l1\"\nwhen = 3\n", "[changes #1]: unknown key(s): when"),
    (BASE + "seed = -1\n", "[trial] seed: must be in [0, 2**63), got -1"),
    (BASE + "[sampler]\ntype = \"grid\"\n[space]\nlr = { type = \"float\", low = 1e-3, high = 1e-2 }\n",
     "[space] lr: the grid sampler needs a finite grid"),
    (BASE + "[target]\nsize = 2\n", "[target] size: must be in [4, 2048] pixels, got 2"),
    (BASE + "[steering]\npoll_interval = 0\n", "[steering] poll_interval: must be in [0.01, 60] seconds, got 0.0"),
    (BASE + "[checkpoints]\nundo_depth = 0\n", "[checkpoints] undo_depth: must be >= 1, got 0"),
    (BASE + "[checkpoints]\nundo = 3\n", "[checkpoints]: unknown key(s): undo"),
    ('[study]\nname = "a/b"\n[trial]\nsteps = 1\n', "[study] name: must be a non-empty name without slashes"),
    ("[study\n", "not valid TOML"),
])
def test_errors_name_file_key_and_allowed(write_spec, text, expected):
    message = _error(write_spec, text)
    assert expected in message
    assert "spec.toml: " in message  # names the file


def test_missing_file():
    with pytest.raises(SpecError, match=r"nope\.toml: spec file not found"):
        load_spec("nope.toml")


def test_grid_with_int_and_step_is_allowed():
    spec = parse_spec({"study": {"name": "g"}, "trial": {"steps": 4}, "sampler": {"type": "grid"},
                       "space": {"hidden_layers": {"type": "int", "low": 1, "high": 3},
                                 "lr": {"type": "float", "low": 0.001, "high": 0.003, "step": 0.001}}})
    assert spec.sampler["type"] == "grid" and len(spec.space) == 2
