"""Named users of the app: who signs in, with which role, and the name recorded with each command.

A users file (TOML) maps names to hashed tokens and roles:

    [users.alice]
    token_sha256 = "9f2c..."   # `steer user alice --users users.toml` writes this and prints the token once
    role = "steer"             # steer: watch and steer; view: watch only

`steer dash --users users.toml` then asks every client for one of the tokens
(as `/?token=TOKEN` once, then a cookie, or `Authorization: Bearer TOKEN`),
records the user's name with every command, shows who is signed in, and
refuses (and records) a viewer's request to steer. Behind a reverse proxy that
authenticates people, `--user-header X-Forwarded-User` takes the name from that
header instead (off by default: trust it only when the proxy sets it and
clients cannot reach the app directly); a name the file lists gets its role, any
other name watches only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import flask

from steer.errors import UserError

ROLES = ("steer", "view")
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
COOKIE = "steer-user"


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def may_steer(self) -> bool:
        return self.role == "steer"


def token_digest(token: str) -> str:
    """What a users file keeps of a token (never the token itself)."""
    return hashlib.sha256(f"steer-user:{token}".encode()).hexdigest()


def load_users(path: Path) -> dict[str, User]:
    """The users file at `path` as {token digest: user}; a `UserError` names what is wrong in it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: users file not found (`steer user NAME --users {path}` makes one)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("users")
    if not isinstance(table, dict) or not table or set(data) != {"users"}:
        raise UserError(f"{path}: expected one [users.NAME] table per user and nothing else")
    users: dict[str, User] = {}
    for name, entry in table.items():
        where = f"{path}: [users.{name}]"
        if not NAME.fullmatch(name):
            raise UserError(f"{where}: a name is 1-64 letters, digits or ._@-")
        if not isinstance(entry, dict) or set(entry) - {"token_sha256", "role"}:
            raise UserError(f"{where}: expected token_sha256 and role, got {sorted(entry) if isinstance(entry, dict) else entry!r}")
        digest, role = entry.get("token_sha256"), entry.get("role", "steer")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UserError(f"{where} token_sha256: expected 64 hex digits (`steer user {name}` writes it)")
        if role not in ROLES:
            raise UserError(f"{where} role: got {role!r}; allowed: {' | '.join(ROLES)}")
        if digest in users:
            raise UserError(f"{where}: the same token as user {users[digest].name!r}")
        users[digest] = User(name, role)
    return users


def add_user(path: Path, name: str, role: str) -> str:
    """Add `name` to the users file (made if missing) or give it a new token; returns the token."""
    import tomli_w

    if not NAME.fullmatch(name):
        raise UserError(f"user name {name!r}: use 1-64 letters, digits or ._@-")
    if role not in ROLES:
        raise UserError(f"--role: got {role!r}; allowed: {' | '.join(ROLES)}")
    data: dict = {"users": {}}
    if path.exists():
        load_users(path)  # refuse to rewrite a file that is broken
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    token = secrets.token_urlsafe(24)
    data["users"][name] = {"token_sha256": token_digest(token), "role": role}
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return token


def current() -> User | None:
    """The user signed in for this request, or None (no users configured, or outside a request)."""
    return flask.g.get("steer_user") if flask.has_request_context() else None


def require_users(server: flask.Flask, users: dict[str, User], header: str | None = None) -> None:
    """Answer 401 to a request from no known user; remember who asks (`current()`) for the others."""
    by_name = {u.name: u for u in users.values()}

    def lookup(token: str) -> User | None:
        digest = token_digest(token)
        return next((u for d, u in users.items() if hmac.compare_digest(d, digest)), None)

    @server.before_request
    def sign_in():
        request = flask.request
        if header is not None:
            name = request.headers.get(header, "").strip()
            if NAME.fullmatch(name):
                flask.g.steer_user = by_name.get(name) or User(name, "view")
                return None
            return _unauthorized(f"no user name in the {header} header (set by the proxy in front)")
        given = request.args.get("token")
        if given is not None:
            user = lookup(given)
            if user is None:
                return _unauthorized("unknown user or wrong token")
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            response = flask.redirect(request.path + (f"?{urlencode(rest)}" if rest else ""))
            # The cookie holds the digest, not the token; HttpOnly and SameSite=Strict as for the shared token.
            response.set_cookie(COOKIE, token_digest(given), httponly=True, samesite="Strict")
            return response
        auth = request.headers.get("Authorization", "")
        user = lookup(auth[7:].strip()) if auth.startswith("Bearer ") else None
        if user is None:
            cookie = request.cookies.get(COOKIE, "")
            user = next((u for d, u in users.items() if hmac.compare_digest(d, cookie)), None)
        if user is None:
            return _unauthorized("unknown user or wrong token" if auth or request.cookies.get(COOKIE) else
                                 "this steer app knows its users: open it once as /?token=YOUR_TOKEN, or send "
                                 "'Authorization: Bearer YOUR_TOKEN'")
        flask.g.steer_user = user
        return None


def _unauthorized(why: str) -> flask.Response:
    return flask.Response(f"401 Unauthorized: {why}.\n", status=401, mimetype="text/plain",
                          headers={"WWW-Authenticate": 'Bearer realm="steer"'})
