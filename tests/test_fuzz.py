"""Bad input never gets a traceback: every entry point, fuzzed with Hypothesis on real storage.

The rule (docs/fuzzing.md): a user mistake gets one clear message (exit status 2 for a usage or
spec error, 1 for a rejected request; HTTP 4xx with a plain reason), never a traceback or a 500,
and the database holds nothing new or exactly one recorded rejection; a running trial keeps
running. Each test below states that rule for one entry point and lets Hypothesis look for a
counter-example:

- the spec parser and the target image (`load_spec`, `Objective`): generated TOML documents,
  broken bytes, image files that are missing, empty, truncated, not images or too big;
- the CLI (`steer ctl|show|export|replay|user ...`): generated argument lists;
- the control plane (`Control.request`) for every action with generated values, on a running
  trial, a finished one and the study;
- the app's HTTP routes and Dash callbacks: generated query strings and callback payloads.

CI runs a fixed, derandomized budget (a few minutes in all); `make fuzz` (STEER_FUZZ_SCALE=20)
runs twenty times as many random examples, for before a release.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import string
import tomllib
from pathlib import Path
from typing import Any

import optuna
import pytest
import tomli_w
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import steer
from steer import actions
from steer.control import Control
from steer.dashboards.guard import COMPONENT_TYPES, STORE_KEYS, STORE_TYPES
from steer.errors import UserError
from steer.objective import check_runnable

from conftest import TINY_SPEC, pg_database, steer_in_thread

SCALE = float(os.environ.get("STEER_FUZZ_SCALE", "1"))


def budget(examples: int):
    """Hypothesis settings for `examples` cases at scale 1: derandomized in CI (the same cases each run,
    so a failure is a bug, not a new draw); random and SCALE times as many under `make fuzz`."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=SCALE == 1,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                          HealthCheck.function_scoped_fixture])


# ---- values ------------------------------------------------------------------------ #

HUGE_INTS = st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**20, -(2**63) - 1, -1, 0])
NUMBER_TEXT = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-0.0", "0x10", "1_000", "", " ", "1e-400",
                               "99999999999999999999", "-5", "3e-4", "½", "٣", "1,5", "None", "true"])
SCALARS = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), HUGE_INTS,
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=12), NUMBER_TEXT)
JSON_VALUES = st.recursive(st.one_of(st.none(), SCALARS),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


# ---- the spec parser and the target image ------------------------------------------ #

BASE_SPEC = tomllib.loads(TINY_SPEC.format(extra=""))
TABLES = ("study", "target", "trial", "sampler", "pruner", "space", "steering")
KEYS = ("name", "trials", "seed", "baseline", "image", "size", "steps", "report_every", "backend", "device",
        "precision", "type", "n_startup_trials", "n_warmup_steps", "lr", "activation", "w0", "width",
        "hidden_layers", "optimizer", "loss", "low", "high", "log", "choices", "poll_interval",
        "publish_interval", "preview_size", "steered", "batch_size", "schedule", "weight_decay", "fourier_features")


@st.composite
def spec_documents(draw) -> dict[str, Any]:
    """A spec derived from a valid one: values replaced (any type, huge, NaN), keys removed or unknown,
    tables nested or not tables at all, ranges emptied or inverted."""
    doc = json.loads(json.dumps(BASE_SPEC))
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        table = draw(st.sampled_from(TABLES + ("changes", "unknown")))
        key = draw(st.sampled_from(KEYS) | st.text(string.ascii_lowercase + "_", min_size=1, max_size=8))
        what = draw(st.sampled_from(["set", "delete", "range", "not a table", "nest"]))
        if what == "not a table":
            doc[table] = draw(SCALARS)
            continue
        section = doc.setdefault(table, {}) if isinstance(doc.get(table, {}), dict) else {}
        if what == "set":
            section[key] = draw(JSON_VALUES.filter(lambda v: v is not None))
        elif what == "delete":
            section.pop(key, None)
        elif what == "range":  # a search dimension: inverted, empty, log of negatives, wrong kinds
            low, high = draw(SCALARS), draw(SCALARS)
            section[key] = {"type": draw(st.sampled_from(["float", "int", "categorical", "bogus"])), "low": low,
                            "high": high, "log": draw(st.booleans()),
                            "choices": draw(st.lists(SCALARS, max_size=3))}
        else:
            section[key] = {"a": {"b": {"c": draw(SCALARS)}}}
        if table == "changes":
            doc["changes"] = [section]
        elif isinstance(doc.get(table), dict) or table not in doc:
            doc[table] = section
    return doc


def _toml(doc: dict[str, Any]) -> bytes | None:
    """The document as TOML bytes; None when TOML cannot say it (a null, an int beyond 64 bits in tomli_w)."""
    try:
        return tomli_w.dumps(doc).encode()
    except (TypeError, ValueError, OverflowError):
        return None


@budget(150)
@given(doc=spec_documents())
def test_fuzz_spec_documents_get_a_spec_or_one_clear_error(tmp_path_factory, doc):
    raw = _toml(doc)
    if raw is None:
        return
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_bytes(raw)
    try:
        spec = steer.load_spec(path)
    except UserError as exc:
        assert str(exc).startswith(str(path)) and str(exc).strip(), exc
        return
    # A spec that parses must also start: its target loads, its backend resolves, or a clear error.
    try:
        check_runnable(spec)
        steer.objective(spec)
    except UserError as exc:
        assert str(exc).strip()


@budget(60)
@given(cut=st.integers(min_value=0, max_value=400), junk=st.binary(max_size=12))
def test_fuzz_spec_bytes_broken_anywhere(tmp_path_factory, cut, junk):
    good = tomli_w.dumps(BASE_SPEC).encode()
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_bytes(good[:cut] + junk + good[cut:])
    try:
        steer.load_spec(path)
    except UserError as exc:
        assert str(path) in str(exc)


def _image_files(folder: Path) -> dict[str, Path]:
    from PIL import Image

    good = folder / "good.png"
    Image.new("RGB", (20, 12), (200, 10, 10)).save(good)
    files = {"good": good, "empty": folder / "empty.png", "truncated": folder / "truncated.png",
             "text": folder / "text.png", "folder": folder, "missing": folder / "missing.png",
             "bomb": folder / "bomb.png"}
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[:40])
    files["text"].write_text("not an image\n")
    # A PNG whose header claims 60000 x 60000 pixels: PIL refuses it as a decompression bomb.
    import struct
    import zlib
    header = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    files["bomb"].write_bytes(header + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    return files


@budget(30)
@given(kind=st.sampled_from(["good", "empty", "truncated", "text", "folder", "missing", "bomb"]),
       size=st.one_of(st.integers(min_value=-5, max_value=70), HUGE_INTS))
def test_fuzz_target_images(tmp_path_factory, kind, size):
    folder = tmp_path_factory.mktemp("images")
    image = _image_files(folder)[kind]
    doc = json.loads(json.dumps(BASE_SPEC))
    doc["target"] = {"image": str(image), "size": size}
    path = folder / "spec.toml"
    path.write_text(tomli_w.dumps(doc))
    try:
        spec = steer.load_spec(path)
        steer.objective(spec)
    except UserError as exc:
        assert str(exc).strip()
    else:
        assert kind == "good"


# ---- a study to aim at -------------------------------------------------------------- #

@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A SQLite study with two finished trials, one of them steered (so it has a record to promote)."""
    folder = tmp_path_factory.mktemp("study")
    spec_text = TINY_SPEC.format(extra="").replace("steps = 30", "steps = 400")
    spec, url, study, worker, control = steer_in_thread(folder, "fuzz", spec_text, n_trials=2)
    control.wait(control.request("set_lr", trial=0, value=3e-3, by="fuzz").id)
    worker.join(120)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    return folder, url, control


def command_rows(control: Control) -> int:
    return len(control.commands())


# ---- the CLI ------------------------------------------------------------------------- #

CTL_WORDS = [a.cli for a in actions.ACTIONS.values()] + ["set_lr", "bogus", ""]
FLAG_VALUES = {"--trial": st.one_of(HUGE_INTS, st.integers(-3, 3).map(str), NUMBER_TEXT, st.text(max_size=6)),
               "--by": st.text(max_size=8), "--reason": st.text(max_size=8), "--request-id": st.text(max_size=8),
               "--wait-timeout": NUMBER_TEXT, "--study": st.text(max_size=6), "--device": st.text(max_size=5),
               "--storage": st.sampled_from(["sqlite:///", "sqlite:///:memory:", "sqlite://", "nope://x", "",
                                             "sqlite:////no/such/folder/x.db", "postgresql+psycopg://u:p@127.0.0.1:1/x",
                                             "sqlite:///%00"])}


@st.composite
def cli_argvs(draw) -> list[str]:
    command = draw(st.sampled_from(["ctl", "show", "export", "replay", "user"]))
    argv = [command]
    if command == "ctl":
        argv.append(draw(st.sampled_from(CTL_WORDS)))
    if command == "user":
        argv.append(draw(st.text(max_size=6)))
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from([*FLAG_VALUES, "--json", "--wait", "--new-seed", "--final-values",
                                     "--compare", "--role", "--bogus", "--", "-x"]))
        argv.append(flag)
        if flag in FLAG_VALUES:
            argv.append(str(draw(FLAG_VALUES[flag])))
        elif flag == "--role":
            argv.append(draw(st.sampled_from(["view", "steer", "admin", ""])))
    argv += [str(v) for v in draw(st.lists(st.one_of(NUMBER_TEXT, HUGE_INTS, st.text(max_size=6)), max_size=3))]
    if "--wait" in argv:
        argv += ["--wait-timeout", "0.2"]  # nothing runs: a wait would only sit out its timeout
    return argv


TRIALS = st.one_of(st.sampled_from(["0", "1", "2", "-1", "2147483647", "2147483648", "99999999999999999999"]),
                   st.integers(-3, 5).map(str))
PARAMS = st.sampled_from(["lr", "optimizer", "loss", "weight_decay", "w0", "activation", "bogus", "", "LR"])
VALUES = st.one_of(NUMBER_TEXT, st.sampled_from(["adam", "adamw", "sgd", "mse", "l1", "huber", "bogus", "0", "1e-3"]),
                   st.text(max_size=6))


@st.composite
def well_formed_argvs(draw) -> list[str]:
    """Argument lists a person could type: the command's own flags, in their places, with values that
    are wrong more often than right (so the commands run, and reach their checks)."""
    command = draw(st.sampled_from(["ctl", "ctl", "ctl", "show", "export", "replay", "user"]))
    if command == "ctl":
        action = draw(st.sampled_from(list(actions.ACTIONS.values())))
        argv = ["ctl", action.cli]
        if action.scope != "study" or draw(st.booleans()):
            argv += ["--trial", draw(TRIALS)]
        if action.takes.startswith("PARAM"):
            argv.append(draw(PARAMS))
        if "VALUE" in action.takes or "SEED" in action.takes:
            argv += draw(st.lists(VALUES, min_size=0, max_size=2))
        if action.name == "promote":
            argv += draw(st.lists(st.sampled_from(["--final-values", "--new-seed"]), max_size=2, unique=True))
        if action.name == "prune" and draw(st.booleans()):
            argv += ["--reason", draw(st.text(max_size=10))]
        if draw(st.booleans()):
            argv += ["--json"]
        return argv
    if command == "user":
        return ["user", draw(st.text(min_size=0, max_size=8)),
                *draw(st.sampled_from([[], ["--role", "view"], ["--role", "steer"], ["--role", "x"]]))]
    argv = [command] + (["--trial", draw(TRIALS)] if command != "show" or draw(st.booleans()) else [])
    if command == "show":
        argv += draw(st.lists(st.sampled_from(["--json", "--compare"]), max_size=2, unique=True))
    if command == "replay" and draw(st.booleans()):
        argv += ["--device", draw(st.sampled_from(["cpu", "cuda", "cuda:7", "tpu", ""]))]
    return argv


def run_main(argv: list[str]) -> tuple[int, str]:
    """steer's CLI in this process: (exit status, what it printed, stderr then stdout)."""
    from steer.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's usage errors and --help
            status = exc.code if isinstance(exc.code, int) else 2
    return status, err.getvalue() + out.getvalue()


@budget(120)
@given(argv=st.one_of(cli_argvs(), well_formed_argvs()))
def test_fuzz_cli_arguments(finished_study, tmp_path_factory, argv):
    folder, url, control = finished_study
    if argv[0] == "user":
        argv += ["--users", str(tmp_path_factory.mktemp("users") / "users.toml")]
    if argv[0] != "user" and "--" not in argv and "--storage" not in argv:
        argv += ["--storage", url]
    before = command_rows(control)
    status, stderr = run_main(argv)
    event(f"exit {status}")
    if os.environ.get("STEER_FUZZ_REASONS") and status == 2:
        event(stderr.strip().splitlines()[-1][:60] if stderr.strip() else "(nothing printed)")
    no_traceback(stderr)
    new = command_rows(control) - before
    assert status in (0, 1, 2), (status, stderr)
    if status == 2:
        assert new == 0 and "error" in stderr.lower(), (argv, stderr)
    elif status == 1:
        assert new == 1 and control.commands()[-1].state == "rejected", (argv, stderr)
    else:
        assert new <= 1


# ---- the control plane ------------------------------------------------------------------ #

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def running_study(request, tmp_path_factory):
    """A study whose trial 0 runs (for minutes) while the requests arrive: in a SQLite file, then in a
    PostgreSQL database where the tests have a server."""
    folder = tmp_path_factory.mktemp("running")
    spec_text = TINY_SPEC.format(extra="").replace("steps = 30", "steps = 10000000")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database()) if request.param == "postgresql" else None
        spec, url, study, worker, control = steer_in_thread(folder, "running", spec_text, n_trials=1, url=url)
        yield control
        control.request("prune", trial=0, by="fuzz teardown")
        worker.join(120)


@budget(200)
@given(action=st.sampled_from([name for name in actions.ACTIONS if name != "prune"] + ["bogus", ""]),
       trial=st.one_of(st.none(), st.just(0), st.just(1), HUGE_INTS, st.floats(allow_nan=True), st.text(max_size=4)),
       value=JSON_VALUES, param=st.one_of(st.none(), st.sampled_from(["lr", "w0", "bogus", ""]), JSON_VALUES),
       reason=st.one_of(st.none(), st.text(max_size=10), JSON_VALUES))
def test_fuzz_control_requests(running_study, action, trial, value, param, reason):
    control = running_study
    before = command_rows(control)
    cmd = control.request(action, trial=trial, value=value, param=param, reason=reason, by="fuzz")
    event(cmd.state)
    assert command_rows(control) == before + 1  # each request is one row, whatever it asked
    assert cmd.state in ("pending", "applied", "rejected", "expired")
    if cmd.state == "rejected":
        assert cmd.reason and cmd.reason.strip()
    live = control.live(0)
    assert live is not None and live.running, "the running trial stopped"
    if cmd.state == "pending":
        control.wait(cmd.id, timeout=30)


# ---- the app: HTTP routes and Dash callbacks ---------------------------------------------- #

PATHS = ["/", "/wall", "/trial/0", "/trial/1", "/trial/99999999999999999999", "/trial/-1", "/nope",
         "/steer/live.png", "/steer/target.png", "/_dash-layout", "/_dash-dependencies", "/_reload-hash"]
QUERY_KEYS = ["study", "trial", "v", "token", "step", ""]


class _Tracebacks(logging.Handler):
    """Keeps every log record that carries a traceback: the server log must have none."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def app_client(finished_study):
    from steer.dashboards.app import create_app

    folder, url, control = finished_study
    app = create_app(url, "tiny")
    tracebacks = _Tracebacks()
    loggers = [app.server.logger, logging.getLogger("steer.dashboards"), logging.getLogger()]
    for logger in loggers:
        logger.addHandler(tracebacks)
    yield app.server.test_client(), app
    for logger in loggers:
        logger.removeHandler(tracebacks)
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records][:5]


@budget(150)
@given(path=st.sampled_from(PATHS), query=st.dictionaries(st.sampled_from(QUERY_KEYS),
                                                          st.one_of(st.text(max_size=8), HUGE_INTS.map(str),
                                                                    NUMBER_TEXT), max_size=3))
def test_fuzz_http_routes(app_client, path, query):
    client, _ = app_client
    response = client.get(path, query_string=query)
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (path, query, response.get_data(as_text=True)[-2000:])


SMALL_INTS = st.integers(min_value=-5, max_value=2**53)
KEYS_SEEN = ["study", "trial", "steps", "images", "value_label", "lr_search", "lr", "optimizer", "loss",
             "weight_decay", "id", "value", "at", "sent", "step", "metrics", "image", "interventions"]


def plausible(component: str, prop: str) -> st.SearchStrategy:
    """Values of the type the page's component sends, edge cases included: a callback's code is reached
    only past the type checks of steer.dashboards.guard (callback_payloads corrupts some on purpose)."""
    if prop in ("n_intervals", "n_clicks", "submit_n_clicks"):
        typed = st.none() | SMALL_INTS
    elif prop in ("pathname", "search", "href"):
        typed = st.none() | st.text(max_size=12) | st.sampled_from(
            ["/", "/wall", "/trial/0", "/trial/1", "/trial/99999999999999999999", "?study=tiny", "?study=",
             "?study=nope&x=1", "?study=%ff"])
    elif prop in ("interval", "drag_value", "min", "max"):
        typed = st.none() | st.floats(allow_nan=True, allow_infinity=True) | SMALL_INTS
    elif prop == "data" and component == "page-ctx":
        typed = st.fixed_dictionaries({"study": st.just("tiny") | st.text(max_size=6)}, optional={
            "trial": st.integers(0, 3) | st.integers(0, 2**31 - 1), "steps": st.none() | SMALL_INTS,
            "images": st.none() | st.booleans(), "value_label": st.none() | st.text(max_size=6),
            "lr_search": st.none() | st.lists(SCALARS, max_size=3)})
    elif prop == "data" and component in STORE_KEYS:
        typed = st.none() | st.fixed_dictionaries({}, optional={
            key: st.one_of(*(by_type for t in types for by_type in [{int: SMALL_INTS, float: st.floats(),
                                                                      str: st.text(max_size=6), bool: st.booleans(),
                                                                      list: st.lists(SCALARS, max_size=3),
                                                                      type(None): st.none()}[t]]))
            for key, (types, _) in STORE_KEYS[component].items()})
    elif prop == "data":
        by_type = {dict: st.dictionaries(st.sampled_from(KEYS_SEEN), JSON_VALUES, max_size=4),
                   list: st.lists(SMALL_INTS, max_size=4), str: st.text(max_size=8), type(None): st.none()}
        typed = st.one_of(*(by_type[t] for t in STORE_TYPES.get(component, (dict, list, str, type(None)))))
    elif (component, prop) in COMPONENT_TYPES:
        typed = st.none() | (st.text(max_size=10) | NUMBER_TEXT if str in COMPONENT_TYPES[component, prop]
                             else st.floats(allow_nan=True, allow_infinity=True) | SMALL_INTS)
    else:  # children, options, ...
        typed = st.none() | SCALARS | st.lists(SCALARS, max_size=3)
    return typed


def _dash_id(text: str) -> Any:
    return json.loads(text) if text.startswith("{") else text


def _outputs(key: str) -> Any:
    """The `outputs` field Dash's renderer sends for a callback_map key ("id.prop" or "..a.p...b.q..")."""
    parts = key[2:-2].split("...") if key.startswith("..") else [key]
    outs = [dict(zip(("id", "property"), part.rsplit(".", 1))) for part in parts]  # "property@hash" kept
    outs = [{"id": _dash_id(o["id"]), "property": o["property"]} for o in outs]
    return outs if key.startswith("..") else outs[0]


@st.composite
def callback_payloads(draw, app) -> bytes:
    """A body for /_dash-update-component: mostly a real callback, shaped as Dash's renderer sends it,
    with generated values (wrong types, huge numbers, forged page context); else a broken shape or
    garbage bytes."""
    kind = draw(st.sampled_from(["real", "real", "real", "shape", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=40))
    if kind == "shape":
        return json.dumps(draw(JSON_VALUES), default=str).encode()
    # Server callbacks (a clientside one has no function here: Dash answers its key with a 400).
    output = draw(st.sampled_from(sorted(k for k, v in app.callback_map.items() if "callback" in v)))
    spec = app.callback_map[output]

    def item(dep: dict[str, str]) -> Any:
        dep_id = _dash_id(dep["id"])
        if isinstance(dep_id, dict):  # a pattern (ALL): a list of the matching components' values
            return [{"id": {k: draw(st.sampled_from(["lr", "w0", "0", "pause"]) | st.text(max_size=3)
                                    | st.integers(0, 3) | HUGE_INTS) if v == ["ALL"] else v
                            for k, v in dep_id.items()}, "property": dep["property"],
                     "value": draw(plausible("", dep["property"]))}
                    for _ in range(draw(st.integers(0, 2)))]
        return {"id": dep_id, "property": dep["property"], "value": draw(plausible(dep["id"], dep["property"]))}

    inputs = [item(i) for i in spec["inputs"]]
    body = {"output": output, "outputs": _outputs(output), "inputs": inputs,
            "state": [item(s) for s in spec.get("state", [])],
            "changedPropIds": [f"{i['id']}.{i['property']}" for i in spec["inputs"][:1]]}
    corrupt = draw(st.integers(0, 9))
    if corrupt == 0:  # a field missing
        body.pop(draw(st.sampled_from(sorted(body))))
    elif corrupt == 1 and any(isinstance(i, dict) for i in inputs):  # a value of any type
        draw(st.sampled_from([i for i in inputs if isinstance(i, dict)]))["value"] = draw(JSON_VALUES)
    return json.dumps(body, default=str).encode()


@budget(150)
@given(data=st.data())
def test_fuzz_dash_callbacks(app_client, data):
    client, app = app_client
    body = data.draw(callback_payloads(app))
    response = client.post("/_dash-update-component", data=body, content_type="application/json")
    event(f"HTTP {response.status_code}")
    if os.environ.get("STEER_FUZZ_REASONS") and response.status_code == 400:
        event(response.get_data(as_text=True)[:70])
    assert response.status_code < 500, (body[:300], response.get_data(as_text=True)[-2000:])


# ---- the cases found by hand (issue 16), as regular tests --------------------------------- #

def test_a_trial_number_beyond_64_bits_is_a_rejected_request(finished_study):
    folder, url, control = finished_study
    before = command_rows(control)
    status, stderr = run_main(["ctl", "set-lr", "--trial", "99999999999999999999", "1e-3", "--storage", url])
    assert status == 1 and "trial numbers are whole numbers from 0 to 2147483647" in (stderr + "")
    no_traceback(stderr)
    last = control.commands()[-1]
    assert command_rows(control) == before + 1 and last.state == "rejected" and last.trial is None


def test_live_png_of_a_trial_beyond_64_bits_is_a_404(app_client):
    client, _ = app_client
    response = client.get("/steer/live.png", query_string={"trial": "99999999999999999999", "study": "tiny"})
    assert response.status_code == 404


def test_double_dash_ends_the_options(finished_study):
    folder, url, control = finished_study
    status, stderr = run_main(["ctl", "set-lr", "--storage", url, "--trial", "1", "--", "-5"])
    assert status == 1 and "rejected" in stderr + "rejected"  # trial 1 has finished: a rejected request
    assert control.commands()[-1].args == {"value": "-5"}


# ---- what the fuzzers found, as regular tests ------------------------------------------------ #

def test_an_image_claiming_billions_of_pixels_is_refused_clearly(tmp_path):
    """Found by test_fuzz_target_images: PIL's DecompressionBombError reached the user as a traceback."""
    from steer.image import load_target

    bomb = _image_files(tmp_path)["bomb"]
    with pytest.raises(UserError, match=r"too large to open"):
        load_target(str(bomb), 16)


def test_a_slider_position_from_outside_the_slider_is_clamped():
    """Found by test_fuzz_dash_callbacks: 10 ** 1e308 overflowed in the LR editor (a 500)."""
    from steer.dashboards import views

    assert views.slider_to_lr(1e308) == views.slider_to_lr(views.LR_MAX_LOG10)
    assert views.slider_to_lr(float("nan")) == views.slider_to_lr(-1e308) == views.slider_to_lr(views.LR_MIN_LOG10)


def _tick_request(page_ctx: Any, n_intervals: Any = 1) -> bytes:
    return json.dumps({
        "output": "..study-summary.children...trials-table.children...best-figure.figure...pins.children"
                  "...study-seen.data..",
        "outputs": [{"id": i, "property": p} for i, p in (("study-summary", "children"), ("trials-table", "children"),
                                                           ("best-figure", "figure"), ("pins", "children"),
                                                           ("study-seen", "data"))],
        "inputs": [{"id": "study-tick", "property": "n_intervals", "value": n_intervals}],
        "state": [{"id": "page-ctx", "property": "data", "value": page_ctx},
                  {"id": "study-seen", "property": "data", "value": None}],
        "changedPropIds": ["study-tick.n_intervals"]}).encode()


@pytest.mark.parametrize("body, status, reason", [
    (b"{not json", 400, "not JSON"),
    (b'{"output": "nope.children"}', 400, "no such callback output"),
    (_tick_request({"study": "tiny"}, n_intervals=[1]), 400, "study-tick.n_intervals: a list"),
    (_tick_request({}), 400, "page context without its study"),
    (_tick_request({"study": "tiny", "trial": 2**40}), 400, "no such trial number"),
    (_tick_request({"study": "gone"}), 400, "no study named 'gone'"),  # a UserError in the callback
    (_tick_request({"study": "tiny"}), 200, ""),
])
def test_callback_requests_no_page_sends_get_a_400_with_the_reason(app_client, body, status, reason):
    """Found by test_fuzz_dash_callbacks: wrong shapes and types reached Dash and the callbacks (500s)."""
    client, _ = app_client
    response = client.post("/_dash-update-component", data=body, content_type="application/json")
    assert response.status_code == status and reason in response.get_data(as_text=True)


def test_an_in_memory_sqlite_url_is_refused_not_retried():
    """Found by hand while fuzzing: `steer show --storage sqlite:///` retried "no such table" without end
    (each connection to an in-memory database sees its own, empty one)."""
    for url in ("sqlite:///", "sqlite:///:memory:", "sqlite://"):
        status, out = run_main(["show", "--storage", url])
        assert status == 2 and "is an in-memory database" in out, out


def test_a_nul_in_a_request_is_recorded_on_postgresql_too(pg_url):
    """Found by `make fuzz` on PostgreSQL: its text columns refuse NUL, so a request whose rejection
    quoted one failed as a database error instead of being recorded."""
    spec = steer.parse_spec(tomllib.loads(TINY_SPEC.format(extra="")))
    study = steer.create_study(spec, pg_url)
    control = Control.open(study)
    cmd = control.request("set_lr", trial="\x00", by="fuzz\x00", request_id="id\x00", reason="r\x00")
    assert cmd.state == "rejected" and "\\x00" in cmd.reason
    stored = control.commands()[-1]
    assert stored.id == cmd.id and stored.requested_by == "fuzz\\x00" and stored.request_id == "id\\x00"


@pytest.mark.parametrize("device, reason", [("tpu", "not a device"), ("cpu:x", "not a device"),
                                            ("meta", "steer trains on the CPU or a CUDA GPU"),
                                            ("cuda:7", "torch sees no CUDA device")])
def test_replay_on_a_device_that_cannot_train_here_says_so(finished_study, device, reason):
    """Found by `make fuzz`: `steer replay --trial 0 --device tpu` (or cuda:7 on a CPU) ended in a traceback."""
    folder, url, control = finished_study
    status, out = run_main(["replay", "--trial", "0", "--device", device, "--storage", url])
    assert status == 2 and reason in out, out
    no_traceback(out)
