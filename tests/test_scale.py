"""Scale: several workers on one study, SQLite and PostgreSQL, killed workers, dropped connections.

Every test here starts real `steer run` processes on a real storage; the
PostgreSQL ones need a server (see conftest.py) and skip without one.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import run_cli
from steer import record
from steer.bench.harness import libpq_url
from steer.bench.scale import readers
from steer.control import Control
from steer.runner import STOPPED
from test_control import STEER_SPEC, open_control, start_worker, wait_for

FAULT_SPEC = STEER_SPEC.format(trials=10_000, steps=300)


def running(control: Control) -> list[int]:
    return [t.number for t in control.study().get_trials(deepcopy=False, states=(TrialState.RUNNING,))]


class Requester(threading.Thread):
    """Asks for a `set_lr` on a running trial every `interval` seconds; keeps every error."""

    def __init__(self, control: Control, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.control, self.interval = control, interval
        self.stop = threading.Event()
        self.sent: list[int] = []
        self.errors: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                numbers = running(self.control)
                if numbers:
                    cmd = self.control.request("set_lr", trial=numbers[i % len(numbers)], value=1e-3 * (1 + i % 5))
                    self.sent.append(cmd.id)
                    i += 1
            except Exception as exc:  # noqa: BLE001 - the test counts every failure, of any kind
                self.errors.append(repr(exc))
            time.sleep(self.interval)

    def finish(self) -> None:
        self.stop.set()
        self.join(30)


def assert_nothing_lost(url: str, control: Control) -> list[optuna.trial.FrozenTrial]:
    """No trial left RUNNING, no command left pending, every applied command in its trial's record."""
    trials = optuna.load_study(study_name="steer", storage=url).trials
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == []
    commands = control.commands()
    assert [c.id for c in commands if c.state == "pending"] == []
    recorded = {e["command"] for t in trials for e in record.attrs(t).get("steer.interventions", [])}
    applied = {c.id for c in commands if c.state == "applied"}
    assert applied - recorded == set(), "applied commands missing from the trials' records"
    return trials


def test_unreachable_server_is_one_clear_line(tiny_spec):
    pytest.importorskip("psycopg")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://steer:secret@127.0.0.1:{port}/steer"
    expected = (f"steer: error: cannot open storage 'postgresql+psycopg://steer:***@127.0.0.1:{port}/steer': "
                f'connection failed: connection to server at "127.0.0.1", port {port} failed: Connection refused; '
                "is the database server running and reachable from here?\n")
    for args in (["run", str(tiny_spec), "--storage", url, "--workers", "2"],
                 ["ctl", "prune", "--trial", "0", "--storage", url]):
        result = run_cli(*args)
        assert (result.returncode, result.stderr) == (2, expected), args
        assert "secret" not in result.stdout + result.stderr


def test_workers_share_the_study_and_steering_reaches_each(tmp_path: Path, storage_url: str):
    """`steer run --workers 2`: both run trials, a command reaches whichever worker holds the trial,
    Ctrl-C stops both cleanly, and the same command resumes the study."""
    spec = tmp_path / "steer.toml"
    spec.write_text(STEER_SPEC.format(trials=3, steps=1_000_000))
    parent = start_worker(spec, "--storage", storage_url, "--workers", "2")
    try:
        control = open_control(storage_url, parent)
        pair = wait_for(lambda: (live := control.live_all()) and len(live) == 2 and [s.trial for s in live],
                        what="two trials running at once")
        commands = {n: control.request("set_lr", trial=n, value=4e-3 + n * 1e-3, by="test") for n in pair}
        for n, cmd in commands.items():
            done = control.wait(cmd.id, timeout=30)
            assert done.state == "applied", done.describe()
        study = optuna.load_study(study_name="steer", storage=storage_url)
        held = {t.number: t for t in study.trials if t.number in pair}
        for n in pair:
            assert held[n].state == TrialState.RUNNING
            assert [e["command"] for e in record.attrs(held[n])["steer.interventions"]] == [commands[n].id]
        assert held[pair[0]].params != held[pair[1]].params  # each worker draws its own params
        pending = control.request("set_loss", trial=pair[0], value="l1")  # still pending when Ctrl-C comes
        parent.send_signal(signal.SIGINT)
        out, err = parent.communicate(timeout=90)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == 130, err
    assert "steer: interrupted; run the same command again to resume the study" in err
    assert out.count("study steer: 2 trials") == 1  # one summary table, from the parent
    trials = assert_nothing_lost(storage_url, control)
    assert [(t.state, record.attrs(t)["steer.fail_reason"]) for t in trials] == [(TrialState.FAIL, STOPPED)] * 2
    assert control.command(pending.id).state in ("applied", "expired")
    assert not control.live_all()  # their last previews say they ended

    resumed = run_cli("run", str(spec), "--storage", storage_url, "--workers", "2", "--steps", "20",
                      env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr
    assert "1 worker processes" in resumed.stderr  # one trial was left in the budget of 3
    states = [t.state for t in optuna.load_study(study_name="steer", storage=storage_url).trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]


def test_killed_workers_lose_no_intervention(tmp_path: Path, storage_url: str):
    """The fault benchmark at a small scale: 3 workers, one SIGKILLed every few seconds while
    commands stream in; then the next worker start leaves nothing RUNNING and nothing is lost."""
    spec = tmp_path / "steer.toml"
    spec.write_text(FAULT_SPEC)
    workers = [start_worker(spec, "--storage", storage_url)]
    control = open_control(storage_url, workers[0])
    workers += [start_worker(spec, "--storage", storage_url) for _ in range(2)]
    requester = Requester(control)
    requester.start()
    killed = []
    try:
        # Every first worker in a trial before the first kill, and the oldest worker killed each time: a
        # replacement still importing torch on a loaded machine has no trial to leave behind.
        wait_for(lambda: len(running(control)) >= 3, what="3 trials running")
        for _ in range(3):
            time.sleep(2.5)
            victim = workers.pop(0)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            killed.append(victim)
            workers.append(start_worker(spec, "--storage", storage_url))
        time.sleep(2.0)
    finally:
        requester.finish()
        for w in workers:
            w.terminate()  # SIGTERM: a clean stop
        errors = [w.communicate(timeout=60)[1] for w in workers]
    # 130: stopped cleanly; -SIGTERM: a replacement still importing torch, before it opened the study.
    assert all(w.returncode in (130, -signal.SIGTERM) for w in workers), ([w.returncode for w in workers], errors)
    for text in errors:
        assert "Traceback" not in text and "locked" not in text and "Error" not in text, text
    assert requester.errors == [] and len(requester.sent) >= 30
    time.sleep(4.0)  # past the grace period (3 s) of the last killed worker's heartbeat
    after = run_cli("run", str(spec), "--storage", storage_url, "--trials", "1")  # the next start sweeps
    assert after.returncode == 0, after.stderr
    trials = assert_nothing_lost(storage_url, control)
    assert sum(t.state == TrialState.FAIL and "steer.fail_reason" not in record.attrs(t) for t in trials) >= 1
    assert sum(c.state == "applied" for c in control.commands()) >= 1  # steering went on through the kills


def test_readers_on_a_busy_sqlite_study_cause_no_errors():
    """The readers benchmark at a small scale: optuna-dashboard (polled over its API) and a
    steering reader on a SQLite study that 2 workers write to; nobody sees a database error."""
    result = readers(seconds=15, workers=2)
    assert result["exit_code"] == 0 and result["worker_errors"] == 0, result
    assert result["trials_failed"] == 0, result
    assert result["dashboard_requests"] >= 10 and result["dashboard_errors"] == 0, result
    assert result["control_polls"] >= 5 and result["control_errors"] == 0, result


def test_dropped_connections_are_retried(tmp_path: Path, pg_url: str):
    """The server closes every connection of the study's database every 0.3 s while a trial
    trains and commands stream in: the trial completes and every command is applied and recorded."""
    import psycopg

    spec = tmp_path / "steer.toml"
    spec.write_text(STEER_SPEC.format(trials=1, steps=2500))
    worker = start_worker(spec, "--storage", pg_url)
    control = open_control(pg_url, worker)
    wait_for(lambda: control.live(0) is not None, what="trial 0 to start")
    database = pg_url.rsplit("/", 1)[1]
    requester = Requester(control)
    requester.start()
    dropped = 0
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as admin:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and worker.poll() is None:
            # The study's own connections only: an autovacuum worker of the database is a superuser's,
            # which this role may not end (it happened once two test processes loaded the server).
            dropped += admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = %s AND usename = current_user AND pid <> pg_backend_pid()",
                                     (database,)).fetchone()[0]
            time.sleep(0.3)
    requester.finish()
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert dropped >= 10  # connections really were cut (pre-ping may replace them without a retry to log)
    assert requester.errors == [] and requester.sent
    trials = assert_nothing_lost(pg_url, control)
    assert trials[0].state == TrialState.COMPLETE
    # A command can still land as the trial completes (then it expires): none may stay pending.
    states = [c.state for c in control.commands()]
    assert "pending" not in states and states.count("applied") >= 1, states
