"""Serving the app: the `steer dash` flags, the exposure check, and a production WSGI server (waitress).

`steer dash` is registered by the CLI with `add_arguments(parser)` and
`run(args)`; `python -m steer.dashboards` runs the same.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from steer.errors import UserError

TOKEN_ENV = "STEER_TOKEN"
THREADS = 8  # a few browsers, each polling a page at 2 Hz


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `steer dash`."""
    from steer.cli import STORAGE_HELP  # the one wording of every command's --storage (this is one of them)

    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument("--study", help="study shown first (default: the storage's only study; a picker "
                                        "switches between several)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1; any other needs a token)")
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    parser.add_argument("--token", help=f"require this token of every client (default: ${TOKEN_ENV}); "
                                        "browsers open /?token=TOKEN once, scripts send 'Authorization: Bearer TOKEN'")
    parser.add_argument("--users", type=Path, metavar="FILE",
                        help="named users (TOML, tokens hashed; `steer user NAME --users FILE` adds one): each "
                             "signs in with their own token, commands record their name, viewers cannot steer")
    parser.add_argument("--user-header", metavar="HEADER",
                        help="take the user's name from this request header, set by a trusted reverse proxy "
                             "in front (off by default; see docs/app.md)")


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token (or named users)."""
    from steer.dashboards.app import is_loopback

    if not token and not is_loopback(host):
        raise UserError(f"--host {host} serves the app beyond this machine: give a token with --token TOKEN "
                        f"or ${TOKEN_ENV} (clients then open /?token=TOKEN once)")


def run(args: argparse.Namespace) -> int:
    """Start the app for parsed `args` and serve until interrupted."""
    from steer.dashboards.app import create_app
    from steer.storage import default_storage_url

    from steer.dashboards.users import load_users

    token = args.token or os.environ.get(TOKEN_ENV) or None
    named = args.users is not None or args.user_header is not None
    if named and args.token:
        raise UserError("give --token or --users, not both: with named users each signs in with their own token")
    users = load_users(args.users) if args.users is not None else None
    check_exposure(args.host, token or ("users" if named else None))
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    app = create_app(args.storage or default_storage_url(), args.study, None if named else token, users,
                     args.user_header)
    server = make_server(app, args.host, args.port)
    where = f"http://{_url_host(args.host)}:{server.effective_port}/"
    how = (f" ({len(users)} users: each opens it once as ?token=THEIR_TOKEN)" if users else
           f" (the user's name from the {args.user_header} header)" if args.user_header else
           " (open it once as ?token=TOKEN)" if token else "")
    print(f"steer dash: {where}{how}; Ctrl+C stops", flush=True)
    try:
        server.run()
    finally:
        server.close()
    return 0


def make_server(app, host: str, port: int):
    """A waitress server for `app` on host:port (port 0: a free one, see `.effective_port`)."""
    from waitress import create_server

    try:
        return create_server(app.server, host=host, port=port, threads=THREADS, ident="steer")
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    import sys

    parser = argparse.ArgumentParser(prog="python -m steer.dashboards", description="the steer Dash app")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"steer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
