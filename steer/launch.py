"""Several worker processes on one study: `steer run SPEC --workers N`.

Optuna's own distributed model: each worker is a separate `steer run`
process on the same storage and study, so a worker on another machine (same
PostgreSQL URL) is no different from one started here. This process starts
them, shows one progress display by reading the study, echoes what they
print, and stops them: Ctrl-C or SIGTERM here becomes one SIGTERM to each
worker, whose running trial then ends FAIL with `steer.fail_reason`, its
pending commands expired.

The workers run in their own session, so a terminal's Ctrl-C reaches only
this process (each worker gets exactly one stop signal; see steer/stopping.py),
and on Linux each worker is sent SIGTERM if this process dies, so none is left
running on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

import optuna
from optuna.trial import TrialState

from steer import stopping
from steer.runner import best_text, finished_count, make_progress, remaining_trials
from steer.spec import Spec

STOP_WAIT = 60.0  # seconds the workers get to end their trials after a stop signal
POLL = 0.5  # seconds between two looks at the workers and the study


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def worker_threads(workers: int) -> int:
    """Torch threads per worker so that `workers` processes share the cores without oversubscribing."""
    return max(1, cpu_count() // workers)


def parse_gpus(text: str) -> list[int]:
    """`--gpus 0,1` -> [0, 1]; a clear UserError for anything else."""
    from steer.errors import UserError

    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"--gpus: expected GPU indices separated by commas, like 0,1; got {text!r}")
    gpus = [int(p) for p in parts]
    if len(set(gpus)) != len(gpus):
        raise UserError(f"--gpus: each GPU once; got {text!r}")
    return gpus


def worker_gpus(workers: int, gpus: list[int] | None) -> list[str | None]:
    """Each worker's GPU (its CUDA_VISIBLE_DEVICES), round-robin over `gpus`; None: leave it alone.

    Without `--gpus`, every CUDA device torch sees takes its turn when there are several; one
    device or none needs no choosing. A worker sees its GPU as cuda:0, so the spec's
    `device = "auto"` or `"cuda"` works unchanged.
    """
    import torch

    return assign_gpus(workers, gpus, torch.cuda.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def assign_gpus(workers: int, gpus: list[int] | None, count: int, visible: str | None) -> list[str | None]:
    """`worker_gpus` for a machine where torch sees `count` devices under CUDA_VISIBLE_DEVICES=`visible`."""
    from steer.errors import UserError

    if gpus is None:
        if count < 2:
            return [None] * workers
        gpus = list(range(count))
    elif count == 0:
        raise UserError(f"--gpus {','.join(map(str, gpus))}: torch sees no CUDA device on this machine")
    elif missing := [g for g in gpus if g >= count]:
        raise UserError(f"--gpus: no GPU {', '.join(map(str, missing))} here; torch sees {count} (0 to {count - 1})")
    # A CUDA_VISIBLE_DEVICES the user set renumbers the devices torch sees: index into it, so a
    # worker's variable names the same device its parent's index did.
    names = [v.strip() for v in (visible or "").split(",") if v.strip()]
    names = names if len(names) >= count else [str(i) for i in range(count)]
    return [names[gpus[i % len(gpus)]] for i in range(workers)]


def worker_env(workers: int, gpu: str | None = None) -> dict[str, str]:
    """A worker's environment: the thread count above unless the user set OMP_NUM_THREADS, and
    its GPU (CUDA_VISIBLE_DEVICES) when it has one of its own."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        threads = str(worker_threads(workers))
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def child_argv(spec_path: str, url: str, study_name: str, overrides: dict[str, Any]) -> list[str]:
    """The command line of one worker: `steer run` on the resolved storage and study, no display."""
    argv = [sys.executable, "-m", "steer", "run", spec_path, "--storage", url, "--study", study_name,
            "--worker-child"]
    for flag, value in overrides.items():
        if value is not None:
            argv += [f"--{flag}", str(value)]
    return argv


def draw_independently(study: optuna.Study, worker_child: bool) -> bool:
    """Reseed the sampler of a worker that shares the study with others; True if it did.

    The spec's seed makes a single process's search reproducible, but two
    processes with the same seed draw the same "random" params: each worker
    of `--workers N`, and a plain `steer run` that finds trials of another
    worker running, reseeds its sampler from the OS instead. (Every trial's
    own seed is still recorded, so each trial stays replayable.)
    """
    if not worker_child and not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return False
    study.sampler.reseed_rng()
    return True


def _die_with_parent(parent: int):
    """A `preexec_fn`: on Linux, the kernel sends the worker SIGTERM when this process dies."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before the line above
                os._exit(1)

    return setup


class Workers:
    """The worker processes of one `steer run --workers N`."""

    def __init__(self, argv: list[str], count: int, console: Any, gpus: list[str | None] | None = None) -> None:
        self.console = console
        self.procs: list[subprocess.Popen] = []
        gpus = gpus or [None] * count
        for gpu in gpus[:count]:  # all started before any thread: `preexec_fn` is not thread-safe
            self.procs.append(subprocess.Popen(
                argv, env=worker_env(count, gpu), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True, start_new_session=True, preexec_fn=_die_with_parent(os.getpid())))
        self._echoes = [threading.Thread(target=self._echo, args=(i, p.stderr), daemon=True)
                        for i, p in enumerate(self.procs)]
        for t in self._echoes:
            t.start()

    def _echo(self, index: int, stream: IO[str]) -> None:
        """Print what worker `index` writes to stderr, prefixed, above the progress display."""
        from rich.text import Text

        for line in stream:
            line = line.rstrip("\n")
            self.console.print(Text(f"worker {index + 1}: {line}", style="dim"))

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def stop(self, timeout: float = STOP_WAIT) -> bool:
        """SIGTERM each live worker once and wait for them; True if all ended by themselves.

        A second Ctrl-C, or `timeout`, kills the ones left with SIGKILL.
        """
        for p in self.alive():
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        try:
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        left = self.alive()
        for p in left:
            p.kill()
        for p in self.procs:
            p.wait()
        for t in self._echoes:
            t.join(5)
        return not left


def run_workers(study: optuna.Study, spec: Spec, argv: list[str], workers: int, console: Any,
                gpus: list[int] | None = None) -> int:
    """Run `workers` worker processes (`argv`) on `study` until its budget is reached; 0 when all went well.

    `gpus` (`--gpus`): the CUDA devices the workers take in turn (default: all, when torch sees several).

    Returns 130 when stopped by Ctrl-C / SIGTERM, 1 when a worker failed.
    """
    stopping.check()
    remaining = remaining_trials(study, spec)
    if remaining == 0:
        console.print(f"study already has {finished_count(study)} finished trials (budget {spec.trials}); "
                      "raise the budget with --trials N to run more")
        return 0
    count = workers if remaining is None else min(workers, remaining)
    devices = worker_gpus(count, gpus)
    threads = os.environ.get("OMP_NUM_THREADS") or worker_threads(count)
    console.print(f"{count} worker processes, {threads} torch thread(s) each, {cpu_count()} cores"
                  + (f"; GPUs {', '.join(d for d in devices if d is not None)}" if any(devices) else ""))
    pool = Workers(argv, count, console, devices)
    interrupted = False
    progress = make_progress(console, extra="{task.fields[running]}")
    task = progress.add_task("trials", total=spec.trials, completed=finished_count(study), best=best_text(study),
                             running="")
    try:
        with progress:
            while True:
                live = pool.alive()
                running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
                progress.update(task, completed=finished_count(study), best=best_text(study),
                                running=f"{running} running, {len(live)} workers")
                if not live:
                    break
                time.sleep(POLL)
                stopping.check()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pool.alive():
            console.print(f"stopping {len(pool.alive())} workers: their running trials end FAIL "
                          "(Ctrl-C again to kill them at once)")
            if not pool.stop():
                console.print(f"killed workers that did not stop within {STOP_WAIT:.0f} s; the next "
                              f"`steer run` marks their trials FAIL once their heartbeats are older than "
                              f"{spec.steering['grace_period']} s")
    if interrupted:
        console.print("steer: interrupted; run the same command again to resume the study")
        return 130
    failed = [(i + 1, p.returncode) for i, p in enumerate(pool.procs) if p.returncode != 0]
    for number, code in failed:
        console.print(f"steer: worker {number} exited with status {code}", style="red")
    return 1 if failed else 0
