"""Steering and scale benchmarks. They print figures; they assert nothing.

    python -m steer.bench all --json docs/steering-bench.json
    python -m steer.bench scale --json docs/scale-bench.json   # PostgreSQL rows: --pg-url or $STEER_TEST_PG_URL

`all` runs the steering group (steering.py), on one SQLite study:
- latency: request -> applied for N `set_lr` requests to a running trial, p50 / p95 / max.
- overhead: training steps per second of the same trial with steering off and on.
- concurrency: W workers on one study while commands are requested every 100 ms:
  "database is locked" errors, unresolved commands, applied commands missing from records.

`scale` runs the scale group (scale.py), on SQLite and PostgreSQL:
- throughput: trials per minute of the quick study by `steer run --workers N`, N = 1, 2, 4.
- readers: workers on a SQLite study read all the while by optuna-dashboard and a Control
  reader: errors on each side.
- faults: workers SIGKILLed every 20 s while commands stream in; then the next worker
  start: lost interventions, trials left RUNNING, database errors.

Each benchmark can also run alone (`python -m steer.bench latency`); `--help` lists the
flags. The studies they run are package data (specs/*.toml), so the benchmarks work from
an installed wheel; PostgreSQL runs need a server whose user may create databases (each
run gets a fresh one). Not to be confused with `steer bench`, the fused-kernel benchmark
(steer.kernels.bench).
"""
