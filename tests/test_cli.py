"""The real `steer` CLI in subprocesses, on real SQLite files."""

import json

import optuna
import pytest

from conftest import run_cli


def test_run_creates_a_study_plain_optuna_reads(tiny_spec, tmp_path):
    result = run_cli("run", str(tiny_spec), "--trials", "2")
    assert result.returncode == 0, result.stderr
    assert "study tiny: 2 trials" in result.stdout and "best: trial" in result.stdout
    db = tmp_path / "tiny.db"  # default storage: beside the spec, named after the study
    assert db.is_file()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert set(t.params) >= {"lr", "activation"} and 1e-3 <= t.params["lr"] <= 1e-2
        assert sorted(t.intermediate_values) == [10, 20, 30] and t.value == t.intermediate_values[30]


def test_run_resumes_to_the_budget_and_show_lists_trials(tiny_spec, tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert run_cli("run", str(tiny_spec), "--storage", url, "--study", "s1", "--trials", "1").returncode == 0
    result = run_cli("run", str(tiny_spec), "--storage", url, "--study", "s1", "--steps", "20", "--trials", "2")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="s1", storage=url)
    assert len(study.trials) == 2  # one more, to the budget of 2
    assert max(study.trials[1].intermediate_values) == 20
    again = run_cli("run", str(tiny_spec), "--storage", url, "--study", "s1", "--trials", "2")
    assert again.returncode == 0 and "already has 2 finished trials" in again.stderr
    shown = run_cli("show", "--storage", url, "--json")
    rows = json.loads(shown.stdout)
    assert [r["number"] for r in rows] == [0, 1] and rows[0]["state"] == "COMPLETE"
    assert rows[0]["psnr"] == study.trials[0].value and "lr" in rows[0]["params"]
    table = run_cli("show", "--storage", url)
    assert table.returncode == 0 and "COMPLETE" in table.stdout


def test_show_finds_the_only_study_under_studies(tiny_spec, tmp_path):
    (tmp_path / "studies").mkdir()
    spec = tmp_path / "studies" / "tiny.toml"
    spec.write_text(tiny_spec.read_text())
    assert run_cli("run", "studies/tiny.toml", "--trials", "1", cwd=tmp_path).returncode == 0
    shown = run_cli("show", "--json", cwd=tmp_path)
    assert shown.returncode == 0 and len(json.loads(shown.stdout)) == 1


def _fails(*args, cwd=None) -> str:
    result = run_cli(*args, cwd=cwd)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("steer: error: ")
    return lines[0]


def test_user_errors_are_one_line_exit_2(tiny_spec, tmp_path, write_spec):
    assert "nope.toml: spec file not found" in _fails("run", str(tmp_path / "nope.toml"))
    bad = write_spec('[study]\nname = "x"\n[trial]\nsteps = 5\n[space]\nlr = { type = "float", low = 1, high = 0.1 }\n',
                     name="bad.toml")
    assert "bad.toml: [space.lr] high: must be greater than low (1), got 0.1" in _fails("run", str(bad))
    noimg = write_spec('[study]\nname = "x"\n[target]\nimage = "missing.png"\n[trial]\nsteps = 5\n', name="noimg.toml")
    assert "target image 'missing.png': no such file" in _fails("run", str(noimg))
    assert not (tmp_path / "x.db").exists()  # nothing created for a bad spec
    assert "bad storage URL 'foo://bar'" in _fails("run", str(tiny_spec), "--storage", "foo://bar")
    assert "--trials must be >= 1, got 0" in _fails("run", str(tiny_spec), "--trials", "0")
    assert "no study database at" in _fails("show", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert "no study database (*.db) found in ./studies or here" in _fails("show", cwd=tmp_path)
    cpu_triton = write_spec(tiny_spec.read_text().replace('backend = "torch"', 'backend = "triton"'), name="t.toml")
    assert "[trial] backend:" in _fails("run", str(cpu_triton))


def test_show_unknown_study_names_the_known_ones(tiny_spec, tmp_path):
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    assert run_cli("run", str(tiny_spec), "--trials", "1").returncode == 0
    assert "no study named 'zzz' in this storage; studies there: tiny" in _fails("show", "--storage", url, "--study", "zzz")
    here = run_cli("show", cwd=tmp_path, env={"STEER_STORAGE": ""})  # the database `run` put beside the spec
    assert here.returncode == 0 and "study tiny: 1 trial" in here.stdout, here.stderr


@pytest.mark.parametrize("argv", [["run", "--help"], ["show", "--help"]])
def test_help_has_an_example(argv):
    result = run_cli(*argv)
    assert result.returncode == 0 and "example:" in result.stdout
