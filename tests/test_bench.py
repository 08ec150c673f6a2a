"""steer.bench's packaged specs: they load, they are valid steer specs, and a changed copy
written with the TOML writer reads back as written. No benchmark runs here."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

import steer
from steer.bench.__main__ import main
from steer.bench.harness import SPEC_NAMES, packaged_spec, write_spec
from steer.spec import parse_spec

STUDIES = Path(__file__).resolve().parent.parent / "studies"


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_packaged_specs_are_valid_specs(name):
    spec = parse_spec(packaged_spec(name), Path(f"{name}.toml"))
    assert spec.name and spec.steps >= 1


def test_every_packaged_file_is_named():
    folder = resources.files("steer.bench") / "specs"
    assert sorted(f.name for f in folder.iterdir() if f.name.endswith(".toml")) == sorted(
        f"{name}.toml" for name in SPEC_NAMES)


def test_the_quick_spec_is_the_one_in_studies():
    """specs/quick.toml is a copy of studies/quick.toml (which a wheel does not ship): keep them equal."""
    with (STUDIES / "quick.toml").open("rb") as f:
        assert packaged_spec("quick") == tomllib.load(f)


def test_a_changed_spec_round_trips(tmp_path):
    data = packaged_spec("steering", study={"trials": 7}, trial={"steps": 400, "report_every": 50},
                         steering={"heartbeat_interval": 2, "grace_period": 6})
    assert data["trial"]["backend"] == "torch"  # changes keep the table's other keys
    path = write_spec(data, tmp_path / "bench.toml")
    with path.open("rb") as f:
        assert tomllib.load(f) == data
    spec = steer.load_spec(path)
    assert (spec.trials, spec.steps, spec.report_every) == (7, 400, 50)
    assert (spec.steering["heartbeat_interval"], spec.steering["grace_period"]) == (2, 6)
    assert [d.name for d in spec.space] == ["lr"] and spec.fixed["encoding"] == "fourier"


def test_each_call_gives_a_fresh_document():
    packaged_spec("steering")["study"]["name"] = "changed"
    assert packaged_spec("steering")["study"]["name"] == "bench"


def test_unknown_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="no packaged spec 'nope'; there are: steering, quick"):
        packaged_spec("nope")


def test_cli_help_names_every_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: python -m steer.bench")
    for which in ("latency", "overhead", "concurrency", "throughput", "readers", "faults", "all", "scale"):
        assert which in usage

