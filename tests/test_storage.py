"""The storage steer opens, under several real processes at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp

import optuna

from steer.control import Control
from steer.storage import open_storage

ENQUEUED = 40
ASKS_PER_PROCESS = 15
PROCESSES = 4


def at_once(target, url: str) -> list:
    """Run `target(url, index, start, out)` in PROCESSES spawned processes released together;
    each puts one result on `out`, or a string naming the exception it met."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, i, start, out)) for i in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert [r for r in results if isinstance(r, str)] == []
    return results


def _ask_and_tell(url: str, _index: int, start, out) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="queue", storage=open_storage(url, heartbeat=False))
    start.wait()
    numbers = []
    try:
        for _ in range(ASKS_PER_PROCESS):
            trial = study.ask()
            numbers.append(trial.number)
            study.tell(trial, 0.0)  # a trial another process took too may be COMPLETE already: ValueError
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails with it
        out.put(f"after trials {numbers}: {exc!r}")
        return
    out.put(numbers)


def test_each_enqueued_trial_is_taken_by_one_process(storage_url: str):
    """4 processes ask for trials at once from a queue of 40 enqueued ones: each is run once.

    Plain Optuna on SQLite lets two processes take the same WAITING trial (its
    SELECT ... FOR UPDATE is a no-op there), and the second `tell` then fails.
    """
    study = optuna.create_study(study_name="queue", storage=open_storage(storage_url, heartbeat=False))
    for i in range(ENQUEUED):
        study.enqueue_trial({"x": float(i)})
    taken = [n for numbers in at_once(_ask_and_tell, storage_url) for n in numbers]
    assert len(taken) == PROCESSES * ASKS_PER_PROCESS
    assert len(set(taken)) == len(taken), sorted(n for n in set(taken) if taken.count(n) > 1)
    states = [t.state for t in optuna.load_study(study_name="queue", storage=storage_url).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(taken)
    assert states.count(optuna.trial.TrialState.WAITING) == 0  # 60 asks emptied the queue of 40


def _first_writes(url: str, index: int, start, out) -> None:
    """What every worker writes on its first trial, and what a person may pin at the same moment."""
    try:
        control = Control.open(url, "queue")
        start.wait()
        for round_ in range(5):
            control.store_target(b"png-%d" % index, 8, 8)
            control.request("pin", param="lr", value=1e-3 * (1 + index), by=f"p{index}")
            control.publish(round_, index, png=None, metric=None)  # every process: the same live rows
        out.put(index)
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails with it
        out.put(repr(exc))


def test_rows_written_by_several_processes_at_once_do_not_collide(storage_url: str):
    """The target image, a pin and a trial's live row, created by 4 processes at the same moment:
    one row each, no IntegrityError (a "read, then insert if missing" lets two pass on PostgreSQL)."""
    optuna.create_study(study_name="queue", storage=open_storage(storage_url, heartbeat=False))
    at_once(_first_writes, storage_url)
    control = Control.open(storage_url, "queue")
    assert control.target_png() in {b"png-%d" % i for i in range(PROCESSES)}  # the first one stays
    assert list(control.pins()) == ["lr"]
    assert control.pins()["lr"].value in {1e-3 * (1 + i) for i in range(PROCESSES)}
    assert sorted(live.trial for live in control.live_all()) == list(range(5))


def test_a_trial_whose_worker_died_before_its_first_heartbeat_goes_stale(storage_url: str):
    """Taking a trial and its first heartbeat are two transactions: a worker killed between them left a
    RUNNING trial that Optuna never finds stale. After the grace period, the sweep fails it."""
    import time

    plain = optuna.create_study(study_name="beatless", storage=open_storage(storage_url, heartbeat=False))
    plain.ask()  # taken, never beating: its worker died at once

    def worker(grace: int) -> optuna.Study:
        return optuna.load_study(study_name="beatless",
                                 storage=open_storage(storage_url, heartbeat_interval=1, grace_period=grace))

    patient = worker(3600)
    assert Control.open(patient).sweep(patient) == []  # within the grace period it may still be starting
    time.sleep(1.1)
    hasty = worker(1)
    assert Control.open(hasty).sweep(hasty) == [0]
    assert [t.state.name for t in hasty.trials] == ["FAIL"]


def test_processes_opening_a_new_sqlite_database_at_once_all_get_it_in_wal_mode(tmp_path):
    """Switching a new file to WAL takes an exclusive lock, and SQLite answers one of two switches
    "database is locked" at once (no busy wait: a deadlock otherwise). A worker failed so, beside the
    test opening its study: `steer run --workers 2`, or a worker and `steer dash`, on a new database."""
    import sqlite3
    import threading

    from steer.storage._engine import enable_wal

    failures = []
    for i in range(60):
        path = tmp_path / f"new{i}.db"
        with sqlite3.connect(path) as conn:  # a database file, not yet in WAL mode
            conn.execute("CREATE TABLE t (x)")
        start = threading.Barrier(3)

        def open_it(path=path, start=start):
            start.wait()
            try:
                enable_wal(path)
            except Exception as exc:  # noqa: BLE001 - counted, then asserted
                failures.append(str(exc))

        threads = [threading.Thread(target=open_it) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not failures, failures[:3]
