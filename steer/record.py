"""The record: what steer keeps about a study and its trials, under `steer.*` attributes.

Optuna's own tables are never altered; what a plain Optuna study cannot say
(what a person changed while a trial ran, what really trained, where a trial
came from) is written as trial attributes with the keys below, so that plain
Optuna, optuna-dashboard and every steer reader see the same record. This
module owns those keys: the writers (the trial side, the objective, the
control plane) use `write()`, the readers (`steer show`, the comparison, the
app, the optuna-dashboard note) `read()` and `attrs()`.

Where a key lives: the few short ones a person scans in Optuna's own tools
(`SHOWN`: steered, promoted from, baseline, why it stopped) are user
attributes; the rest of the record (params, interventions, schedules, ...) is
kept in the trial's system attributes, under the same `steer.*` names. Optuna's
tools print every user attribute in full: with the whole record there, a
steered trial's row of `optuna trials` was 1,500 characters wide and its
optuna-dashboard page 5,000 px. Studies from before kept everything as user
attributes; `attrs()` reads both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from steer.actions import ACTIONS, SETTING_ACTIONS

PREFIX = "steer."

# ---- study attributes ------------------------------------------------------- #
SPEC = "steer.spec"  # what a replay and the app need of the spec (image, size, steps, ...)
ARTIFACTS = "steer.artifacts"  # the study's artifact folder (images)
HELD = "steer.held"  # {"by", "at"} while the study is held (no new trial starts), else None

# ---- trial attributes: how it started ---------------------------------------- #
PARAMS = "steer.params"  # every param the built-in objective trained with at step 0 (a replay starts here)
SEED = "steer.seed"
BACKEND = "steer.backend"
DEVICE = "steer.device"
VISIBLE_GPUS = "steer.cuda_visible_devices"  # the worker's GPU (CUDA_VISIBLE_DEVICES), when it was given one
TORCH_THREADS = "steer.torch_threads"
CUDA_GRAPH = "steer.cuda_graph"  # True when the trial's steps ran as captured CUDA graphs (absent: they did not)
FUSED_STEP = "steer.fused_step"  # True when the triton backend trained it with the one-kernel step (absent: not)
PINNED = "steer.pinned"  # the study pins this trial honoured when it started
LR_FOUND = "steer.lr_found"  # the LR range test a trial of a spec with lr = "find" started with
HINTED = "steer.hinted"  # {param: value}: what a person's hint drew for this trial (steer.search_space)
SPACE_EDITS = "steer.space_edits"  # {param: range}: the search-space edits in force when it started
CHOICES = "steer.choices"  # the optimizer and loss names this trial can switch to
BASELINE = "steer.baseline"  # the spec's hand-picked first trial
PROMOTED_FROM = "steer.promoted_from"  # the trial whose run this one repeats, clean (see `promotion`)
PROMOTION = "steer.promotion"  # how: {"from": N, "schedule": bool, "seed": "same" | "new"}
OVERRIDES = "steer.overrides"  # the values a promoted trial must start with, searched or not
SCHEDULE = "steer.schedule"  # a promoted trial's changes to make, [{"step", "action", "args"}], at those steps
FORK_OF = "steer.fork_of"  # the trial this one was forked from (it started from that trial's checkpoint)
RETRY_OF = "steer.retry_of"  # the crashed trial this one carries on from its last checkpoint
RESUME = "steer.resume"  # where a fork or a retry starts: {"kind", "from", "step", "checkpoint", "applied", ...}

# ---- trial attributes: what happened ----------------------------------------- #
INTERVENTIONS = "steer.interventions"  # every applied command, in order (see `entry`)
STEERED = "steer.steered"  # True once an intervention changed what trains
EFFECTIVE_PARAMS = "steer.effective_params"  # the params as they stood at the end
FINAL_STEP = "steer.final_step"
TRAIN_SECONDS = "steer.train_seconds"
PAUSED = "steer.paused"  # {"since", "step", "by"} while the trial is paused, else None
PAUSED_SECONDS = "steer.paused_seconds"  # how long it was paused in all
SPARED = "steer.spared"  # why the pruner's verdict was overruled (kept, watched), with the step
PRUNED_REASON = "steer.pruned_reason"
DIVERGED = "steer.diverged"
FAIL_REASON = "steer.fail_reason"
CHECKPOINT_WARNING = "steer.checkpoint_warning"  # why a checkpoint could not be written (the trial went on)


# The keys kept as user attributes: short, and what a person looks for in `optuna trials` and
# optuna-dashboard. Every other key is a system attribute.
SHOWN = (STEERED, PROMOTED_FROM, FORK_OF, RETRY_OF, BASELINE, PRUNED_REASON, DIVERGED, HINTED)


def attrs(trial: Any) -> dict[str, Any]:
    """A trial's `steer.*` attributes wherever they are kept (an `optuna.Trial` or a `FrozenTrial`)."""
    from steer.storage import trial_system_attrs  # not at the top: `steer --help` imports this module

    hidden = trial_system_attrs(trial)
    return {**{k: v for k, v in hidden.items() if k.startswith(PREFIX)},
            **{k: v for k, v in trial.user_attrs.items() if k.startswith(PREFIX)}}


def write(trial: Any, key: str, value: Any) -> None:
    """Record `key` on a running `optuna.Trial`, where that key is kept (see `SHOWN`)."""
    from steer.storage import set_trial_system_attr

    if key in SHOWN:
        trial.set_user_attr(key, value)
    else:
        set_trial_system_attr(trial, key, value)


def split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`values` as (user attributes, system attributes), for a trial created with them (enqueued)."""
    return ({k: v for k, v in values.items() if k in SHOWN}, {k: v for k, v in values.items() if k not in SHOWN})


def entry(command: int, action: str, args: dict[str, Any], old: Any, new: Any, step: int, by: str,
          at: float | None = None) -> dict[str, Any]:
    """One applied intervention as it is recorded in `steer.interventions` and the command's result."""
    return {"command": command, "action": action, "args": args, "old": old, "new": new, "step": step,
            "at": time.time() if at is None else at, "by": by}


def steers(interventions: list[dict[str, Any]]) -> bool:
    """Whether any of these interventions changed what trains (a pin or a promote does not)."""
    return any(ACTIONS[e["action"]].steers for e in interventions if e.get("action") in ACTIONS)


@dataclass(frozen=True)
class TrialRecord:
    """Everything steer recorded about one trial, read from its attributes."""

    number: int
    state: str
    value: float | None
    sampled: dict[str, Any]  # what Optuna's sampler suggested (`trial.params`)
    started_with: dict[str, Any]  # what trained at step 0
    effective: dict[str, Any]  # what trained at the end (or now, for a running trial's last record)
    interventions: list[dict[str, Any]] = field(default_factory=list)
    pinned: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False
    promoted_from: int | None = None
    note: str | None = None  # why it was pruned, diverged or failed
    duration_s: float | None = None
    marked_steered: bool = False  # `steer.steered` as written
    paused: dict[str, Any] | None = None  # since when, at which step, by whom; None when not paused
    paused_seconds: float = 0.0
    spared: str | None = None  # "would be pruned at step N (watched)"
    seed: int | None = None
    schedule: list[dict[str, Any]] = field(default_factory=list)  # a promoted trial's changes at their steps
    promotion: dict[str, Any] | None = None  # how it was promoted (see PROMOTION)
    hinted: dict[str, Any] = field(default_factory=dict)  # params a person's hint drew (see HINTED)
    resume: dict[str, Any] | None = None  # a fork's or a retry's starting point (see RESUME)
    checkpoint_warning: str | None = None

    @property
    def kept(self) -> bool:
        """Exempt from automatic pruning by a person (`keep`)."""
        return any(e.get("action") == "keep" for e in self.interventions)

    @property
    def steered(self) -> bool:
        """Whether a person changed what trained. Read from the interventions (a trial from before
        this rule counted a pin as steering); without them, as the trial marked itself."""
        return steers(self.interventions) if self.interventions else self.marked_steered

    @property
    def steering_count(self) -> int:
        """How many interventions changed what trains."""
        return sum(1 for e in self.interventions if e.get("action") in ACTIONS and ACTIONS[e["action"]].steers)

    def changes(self, up_to: int | None = None) -> list[dict[str, Any]]:
        """Every change of what trained, in the order applied, up to step `up_to`: the schedule it was
        given (a promoted trial) and the interventions that steered it. Replay and promote repeat these."""
        given = [(e["step"], 0, i, e) for i, e in enumerate(self.schedule)]
        applied = [(e["step"], 1, i, e) for i, e in enumerate(self.interventions)
                   if e.get("action") in ACTIONS and ACTIONS[e["action"]].replayed]
        # At one step boundary the schedule goes first (the trial applies it before it polls its commands).
        return [{"step": e["step"], "action": e["action"], "args": e["args"]}
                for *_, e in sorted(given + applied, key=lambda x: x[:3]) if up_to is None or e["step"] <= up_to]

    @property
    def fork_of(self) -> int | None:
        return self.resume["from"] if self.resume and self.resume.get("kind") == "fork" else None

    @property
    def retry_of(self) -> int | None:
        return self.resume["from"] if self.resume and self.resume.get("kind") == "retry" else None

    @property
    def origin(self) -> str | None:
        """Where the trial came from, in words: baseline, promoted from #N, fork of #N at step S, retry of
        #N from step S, or None (the sampler)."""
        if self.promoted_from is not None:
            return f"promoted from #{self.promoted_from}"
        if self.resume:
            how = "fork of" if self.resume.get("kind") == "fork" else "retry of"
            return f"{how} #{self.resume['from']} at step {self.resume['step']}"
        return "baseline" if self.baseline else None


def read(trial: FrozenTrial) -> TrialRecord:
    """The record of `trial` (any Optuna trial: one steer never touched reads as plain)."""
    kept = attrs(trial)
    started = {k: v for k, v in {**trial.params, **(kept.get(PARAMS) or {})}.items() if not is_scheduled(k)}
    done = trial.datetime_complete and trial.datetime_start
    return TrialRecord(
        number=trial.number, state=trial.state.name, value=trial.value if trial.values else None,
        sampled=dict(trial.params), started_with=started,
        effective={**started, **(kept.get(EFFECTIVE_PARAMS) or {})},
        interventions=list(kept.get(INTERVENTIONS) or []), pinned=dict(kept.get(PINNED) or {}),
        baseline=bool(kept.get(BASELINE, False)), promoted_from=kept.get(PROMOTED_FROM),
        note=kept.get(PRUNED_REASON) or kept.get(DIVERGED) or kept.get(FAIL_REASON),
        duration_s=round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2) if done else None,
        marked_steered=bool(kept.get(STEERED, False)),
        paused=kept.get(PAUSED), paused_seconds=float(kept.get(PAUSED_SECONDS) or 0.0), spared=kept.get(SPARED),
        seed=kept.get(SEED), schedule=list(kept.get(SCHEDULE) or []), promotion=kept.get(PROMOTION),
        hinted=dict(kept.get(HINTED) or {}), resume=kept.get(RESUME), checkpoint_warning=kept.get(CHECKPOINT_WARNING),
    )


def row(trial: FrozenTrial, promoted_as: list[int] | tuple[int, ...] = ()) -> dict[str, Any]:
    """One trial as plain data: what `steer show` prints and `--json` emits, the app's table row.
    `promoted_as`: the trials promoted from this one (`promoted_as()` of the study's trials)."""
    rec = read(trial)
    return {"number": rec.number, "state": rec.state, "psnr": rec.value, "params": rec.sampled,
            "duration_s": rec.duration_s, "steered": rec.steered, "baseline": rec.baseline,
            "promoted_from": rec.promoted_from, "promoted_as": list(promoted_as), "origin": rec.origin,
            "hinted": rec.hinted, "note": rec.note, "fork_of": rec.fork_of, "retry_of": rec.retry_of,
            "resumed_at": rec.resume["step"] if rec.resume else None}


def rows(trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """`row` of every trial, with what was promoted from each and who carries each on (`forks`,
    `retried_as`: a finished trial's attributes cannot change, so these are found from the children's
    `fork_of` and `retry_of`)."""
    promotions = promoted_as(trials)
    out = [row(t, promotions.get(t.number, ())) for t in trials]
    children: dict[tuple[str, int], list[int]] = {}
    for r in out:
        for kind in ("fork_of", "retry_of"):
            if r[kind] is not None:
                children.setdefault((kind, r[kind]), []).append(r["number"])
    for r in out:
        r["forks"] = children.get(("fork_of", r["number"]), [])
        r["retried_as"] = children.get(("retry_of", r["number"]), [])
    return out


def how_to_get_again(rows: list[dict[str, Any]], best: int) -> str:
    """How to get trial `best` (of `rows()`) again, in one line: a steered trial cannot be re-run from its
    params (`steer show` and the study page say it of the best trial)."""
    row = next(r for r in rows if r["number"] == best)
    if not row["steered"]:
        return f"it trained as its params say: `steer export --trial {best}` writes a spec that trains it again"
    clean = [r for r in rows if r["number"] in row["promoted_as"]]
    done = [r for r in clean if r["psnr"] is not None]
    if done:
        r = max(done, key=lambda r: r["psnr"])
        return (f"it was steered; its clean run is trial {r['number']} ({r['state']}, PSNR {r['psnr']:.2f} dB), "
                f"whose params carry the schedule")
    if clean:
        return f"it was steered; its clean run, trial {clean[0]['number']}, has not finished"
    how = (f"promote it (its page's button, or `steer ctl promote --trial {best}`) to re-run its schedule "
           f"cleanly; `steer export --trial {best}` writes it as a spec")
    if any(is_scheduled(k) for k in row["params"]):  # its changes are params (`lr@479`): they say what trained
        return f"it was steered, so the sampler does not learn from it: {how}"
    return f"it was steered, so its params do not say what trained: {how}"  # recorded before changes became params


def choices(trial: FrozenTrial, setting: str) -> tuple[str, ...] | None:
    """The names `setting` (optimizer, loss) can take on this trial, or None when it did not say
    (trials from before steer recorded it: the spec's names apply)."""
    recorded = (attrs(trial).get(CHOICES) or {}).get(setting)
    return None if recorded is None else tuple(recorded)


# ---- the optuna-dashboard note ------------------------------------------------ #


def change(e: dict[str, Any]) -> str:
    """One applied intervention in words: "lr 0.0025 -> 0.0003", "promoted as #15"."""
    action, args, new = e.get("action", "?"), e.get("args") or {}, e.get("new")
    setting = ACTIONS[action].setting if action in ACTIONS else None
    if setting is not None:
        return f"{setting} {fmt(e.get('old'))} -> {fmt(new)}"
    if action == "reset":
        return f"weights re-initialised (seed {new})"
    if action == "prune":
        return "pruned" + (f": {args['reason']}" if args.get("reason") else "")
    if action == "pin":
        param = args.get("param", "")
        return f"pinned {param} = {fmt(new)} for later trials"
    if action == "promote":
        return f"promoted as #{new['trial']}" if isinstance(new, dict) and "trial" in new else "promoted (a clean run enqueued)"
    if action == "find_lr" and isinstance(new, dict):
        found = new.get("suggestion")
        return (f"LR range test: suggested {fmt(found)}" if found is not None else "LR range test: no suggestion") \
            + f" ({new.get('reason')})"
    if action == "undo":
        new = new if isinstance(new, dict) else {}
        return (f"undid {fmt(e.get('old'))}" + (f" (command {new['command']})" if "command" in new else "")
                + (f", back to its state at step {new['step']}" if "step" in new else ""))
    if action == "fork":
        changed = fmt((new or {}).get("changes")) if isinstance(new, dict) else ""
        return (f"forked as #{new['trial']}" if isinstance(new, dict) and "trial" in new else "forked") \
            + (f" with {changed}" if changed else " (no change)")
    words = {"pause": "paused", "resume": "resumed", "keep": "kept from automatic pruning"}
    return words.get(action) or f"{action} {fmt(args)}".strip()


def provenance(rec: TrialRecord, promoted_as: list[int] | tuple[int, ...] = ()) -> list[str]:
    """Where a trial came from and what became of it, a sentence each (the note, `steer show --trial`)."""
    lines = []
    if rec.promoted_from is not None:
        how = rec.promotion or {}
        what = ("its final values from step 0" if how.get("schedule") is False else
                f"its schedule from step 0 ({len(rec.schedule)} change{'s' * (len(rec.schedule) != 1)})"
                if how else "its effective values from step 0")
        seed = {"same": ", same seed", "new": ", a new seed"}.get(how.get("seed"), "")
        lines.append(f"Promoted from #{rec.promoted_from}: {what}{seed}; never pruned automatically.")
    if rec.resume:
        r = rec.resume
        start = (f"its checkpoint {r['checkpoint']} at step {r['step']}" if r.get("checkpoint") is not None
                 else "step 0 (it had no checkpoint)")
        if r.get("kind") == "fork":
            changed = fmt(r.get("changes")) or "no change"
            lines.append(f"Forked from #{r['from']} at step {r['step']} ({changed}), starting from {start}.")
        else:
            lines.append(f"Retried from #{r['from']} (its worker died), starting from {start}; "
                         f"attempt {r.get('attempt', 1)}.")
    if rec.checkpoint_warning:
        lines.append(f"Checkpoints: {rec.checkpoint_warning}.")
    if rec.baseline:
        lines.append("The baseline: the seeds' hand-picked net.")
    # A running trial's promotions are in its interventions; a finished one's are found by the caller.
    promoted_as = sorted({*promoted_as, *(e["new"]["trial"] for e in rec.interventions
                                          if e.get("action") == "promote" and isinstance(e.get("new"), dict))})
    if promoted_as:
        lines.append("Promoted as " + ", ".join(f"#{n}" for n in promoted_as) + ".")
    return lines


def note(rec: TrialRecord, promoted_as: list[int] | tuple[int, ...] = ()) -> str:
    """The optuna-dashboard note of a trial: where it came from, then its interventions as a timeline."""
    lines = [f"## Trial {rec.number}"]
    origin = provenance(rec, promoted_as)
    if origin:
        lines += ["", *origin]
    if rec.interventions:
        lines += ["", "| step | change | by | when (UTC) |", "|---:|---|---|---|"]
        lines += [f"| {e['step']} | {change(e)} | {e['by']} | {when(e['at'])} |" for e in rec.interventions]
    return "\n".join(lines) + "\n"


def when(at: float) -> str:
    """A recorded time (epoch seconds) as the timelines print it, in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def fmt(v: Any) -> str:
    """A recorded value in a line of text: floats with 4 significant digits, dicts flat."""
    if v is None or v == {}:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


# ---- promotion: a clean run of what a trial did ------------------------------- #

SCHEDULE_MARK = "@"  # a scheduled change as an Optuna param: "lr@479" = 3e-4 (set lr to 3e-4 after step 479)


def scheduled_param(event: dict[str, Any]) -> tuple[str, Any]:
    """A schedule event as the Optuna param a promoted trial records: (`lr@479`, 3e-4), (`reset@0`, seed),
    (`undo@900`, 1)."""
    action = ACTIONS[event["action"]]
    name = action.setting or action.name
    # a setting's new value, a reset's seed, an undo's mark (1: it happened)
    value = event["args"]["value"] if action.setting else 1 if action.name == "undo" else event["args"].get("seed")
    return f"{name}{SCHEDULE_MARK}{event['step']}", value


def is_scheduled(param: str) -> bool:
    return SCHEDULE_MARK in param


def promotion(rec: TrialRecord, *, effective: dict[str, Any] | None = None, up_to: int | None = None,
              final_values: bool = False, new_seed: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params and user attrs that enqueue a clean, unsteered run of what trial `rec` did.

    By default the new trial starts from `rec`'s starting values and seed and
    makes every change `rec` trained with (its own schedule and its steering
    interventions, up to step `up_to`) at the same step: on the CPU it
    reproduces `rec`'s PSNR bit for bit. Each change is also an Optuna param
    (`lr@479`), so `best_params`, the sampler and optuna-dashboard carry the
    schedule. `final_values`: the values `rec` ended with (`effective`, if it
    is still running) from step 0 instead, with no schedule. `new_seed`: the
    new trial draws its own seed (a robustness check).

    Every starting value also goes in as `steer.overrides`, which the objective
    applies to params the spec does not search (e.g. a loss changed by hand
    while the spec fixes it).
    """
    same_seed = not new_seed and rec.seed is not None
    attrs: dict[str, Any] = {PROMOTED_FROM: rec.number,
                             PROMOTION: {"from": rec.number, "schedule": not final_values,
                                         "seed": "same" if same_seed else "new"}}
    if same_seed:
        attrs[SEED] = rec.seed
    if final_values:
        start = {k: v for k, v in (rec.effective if effective is None else effective).items() if not is_scheduled(k)}
        return dict(start), {**attrs, OVERRIDES: start}
    events = rec.changes(up_to)
    params = {**rec.started_with, **dict(scheduled_param(e) for e in events)}
    return params, {**attrs, OVERRIDES: dict(rec.started_with), SCHEDULE: events}


def continuation(rec: TrialRecord, *, kind: str, step: int, checkpoint: int | None,
                 changes: dict[str, Any] | None = None, attempt: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params and attrs that enqueue a trial carrying on from `rec`'s checkpoint (a `fork`, or a
    `retry` of a trial whose worker died), `checkpoint` taken at `step` (None: none, start at step 0).

    Its schedule is the whole chain back to step 0, so `steer replay` (and a promote) can run it from
    scratch: the changes the checkpoint holds already (`applied` of them, which the trial skips), then a
    fork's `changes` at `step`, then what `rec` had yet to do: a fork repeats its parent's given schedule
    after `step`; a retry every change its dead trial made after it (the person's included), at its step.
    Every event is also an Optuna param (`lr@479`), as for a promoted trial.
    """
    held = rec.changes(step) if checkpoint is not None else []
    at_fork = [{"step": step, "action": SETTING_ACTIONS[k].name, "args": {"value": v}}
               for k, v in (changes or {}).items()]
    if kind == "fork":
        later = [{"step": e["step"], "action": e["action"], "args": e["args"]} for e in rec.schedule if e["step"] > step]
    else:
        later = [e for e in rec.changes() if checkpoint is None or e["step"] > step]
    schedule = held + at_fork + later
    params = {**rec.started_with, **dict(scheduled_param(e) for e in schedule)}
    resume = {"kind": kind, "from": rec.number, "step": step if checkpoint is not None else 0,
              "checkpoint": checkpoint, "applied": len(held)}
    if kind == "fork":
        resume["changes"] = dict(changes or {})
    else:  # the dead trial's exemption from automatic pruning carries over, with the attempt
        resume.update(attempt=attempt, exempt=bool(rec.steered or rec.promoted_from is not None or rec.kept))
    attrs: dict[str, Any] = {FORK_OF if kind == "fork" else RETRY_OF: rec.number, RESUME: resume,
                             OVERRIDES: dict(rec.started_with), SCHEDULE: schedule}
    if rec.seed is not None:
        attrs[SEED] = rec.seed
    return params, attrs


def promoted_as(trials: list[FrozenTrial]) -> dict[int, list[int]]:
    """Trial number -> the trials promoted from it (a finished trial's attributes cannot be changed,
    so a source's promotions are found from the promoted trials)."""
    out: dict[int, list[int]] = {}
    for t in trials:
        source = attrs(t).get(PROMOTED_FROM)
        if source is not None:
            out.setdefault(source, []).append(t.number)
    return out
