"""Commands that train nothing do not import torch: `steer ctl`, `show`, `dash`, `dashboard` and
every `--help` start in a fraction of torch's import time (figures in docs/cli.md).

Each check runs in a fresh interpreter (this one has torch loaded already) and reads what it
imported: `sys.modules` after an import, `-X importtime` (PYTHONPROFILEIMPORTTIME) for a CLI run.
Nothing here is timed: timings flake.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import run_cli

# What only `steer run`, `replay` and `bench` need (numpy and PIL are not here: optuna and plotly load them).
TRAINING_ONLY = ("torch", "triton")


def imported(stderr: str) -> set[str]:
    """The modules a `-X importtime` run imported: its lines read 'import time: SELF | CUMULATIVE | NAME'."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def training_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in TRAINING_ONLY)


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["steer", "steer.cli", "steer.control", "steer.record", "steer.actions",
                                    "steer.spec", "steer.replay", "steer.dashboards.app", "steer.kernels"])
def test_importing_the_modules_behind_ctl_show_and_dash_leaves_torch_out(module):
    result = python(f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in "
                    f"{TRAINING_ONLY!r}))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing {module} imported {result.stdout.strip()}"


@pytest.mark.parametrize("command", [[], ["run"], ["show"], ["dash"], ["dashboard"], ["ctl"], ["replay"], ["bench"]])
def test_help_does_not_import_torch(command):
    result = run_cli(*command, "--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    assert "usage: steer" in result.stdout
    modules = imported(result.stderr)
    assert "steer.cli" in modules  # the check reads the real import list
    assert training_modules(modules) == []


def test_bench_help_still_lists_the_benchmark_flags():
    result = run_cli("bench", "--help")
    assert result.returncode == 0 and "--widths" in result.stdout and "--threads" in result.stdout


def test_show_and_ctl_on_a_study_do_not_import_torch(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(study_name="plain", storage=url)
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=1)
    for argv in (["show", "--storage", url], ["show", "--storage", url, "--trial", "0"],
                 ["ctl", "pin", "lr", "1e-3", "--storage", url]):
        result = run_cli(*argv, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert result.returncode == 0, result.stderr
        assert training_modules(imported(result.stderr)) == [], argv


def test_kernel_option_values_need_no_torch_and_the_models_load_it():
    result = python("import sys\n"
                    "from steer.kernels import BACKENDS, DEFAULT_PRECISION, PRECISIONS, BackendError\n"
                    "print('torch' in sys.modules)\n"
                    "from steer.kernels import MLPConfig, build_model\n"
                    "print('torch' in sys.modules, build_model.__module__, MLPConfig.__module__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "steer.kernels.backends", "steer.kernels.reference"]


# `steer.steering` and `steer.objective` are both submodules and functions; the package's
# attributes are the functions (`steer.steering(trial, optimizer=opt)`), whatever is imported first.
@pytest.mark.parametrize("first", [
    "import steer.steering, steer.objective",  # the submodules first: their import binds them on steer
    "import steer.trainer",  # imports steer.steering on the way
    "import steer; steer.steering; steer.objective",  # the attributes first
    "from steer import steering, objective; assert callable(steering) and callable(objective)",
    "from steer.steering import Steering; from steer.objective import Objective",
])
def test_steer_steering_and_steer_objective_are_the_functions(first):
    result = python(f"{first}\n"
                    "import sys, steer, steer.steering, steer.objective\n"
                    "assert steer.steering is sys.modules['steer.steering'].steering, steer.steering\n"
                    "assert steer.objective is sys.modules['steer.objective'].objective, steer.objective\n"
                    "from steer import steering\n"
                    "assert steering is steer.steering\n")
    assert result.returncode == 0, result.stderr


def test_the_public_names_load_on_first_use():
    result = python("import sys, steer\n"
                    "assert 'torch' not in sys.modules\n"
                    "assert steer.UserError.__module__ == 'steer.errors'\n"
                    "assert steer.load_spec.__module__ == 'steer.spec' and steer.Control.__module__ == 'steer.control'\n"
                    "assert 'torch' not in sys.modules\n"
                    "assert steer.Trainer.__module__ == 'steer.trainer' and 'torch' in sys.modules\n"
                    "assert steer.create_study.__module__ == 'steer.objective'\n"
                    "assert set(steer.__all__) <= set(dir(steer))\n"
                    "try:\n"
                    "    steer.no_such_name\n"
                    "except AttributeError as exc:\n"
                    "    print(exc)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "module 'steer' has no attribute 'no_such_name'"


# What a GPU machine's image lacks until the project's wheels are installed (see make gpu-check).
NOT_ON_A_BARE_GPU_MACHINE = ("optuna", "sqlalchemy", "alembic", "dash", "flask", "plotly", "optuna_dashboard",
                             "waitress", "tomli_w")


def test_the_kernels_and_their_tests_need_only_torch_triton_and_pytest(tmp_path):
    """On a GPU machine the kernel tests run before the rest is installed: steer.kernels (the models, the
    benchmark, the resource check) and tests/test_kernels.py import nothing else."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import importlib.abc, sys\n"
        f"BLOCKED = {NOT_ON_A_BARE_GPU_MACHINE!r}\n"
        "class Blocker(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (blocked by this test)', name=name)\n"
        "sys.meta_path.insert(0, Blocker())\n")
    code = ("import steer.kernels.fused, steer.kernels.bench, steer.kernels.resources, steer.kernels.backends\n"
            "import pytest, sys\n"
            "sys.exit(pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', 'tests/test_kernels.py']))\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tests collected" in result.stdout
