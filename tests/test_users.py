"""Who did it: named users of the app sign in with their own token, their commands record their name,
viewers watch but cannot steer, and a trusted proxy header may carry the name (real app, real study)."""

from __future__ import annotations

import optuna
import pytest

from steer.cli import main as cli_main
from steer.control import Control
from steer.dashboards.app import create_app
from steer.dashboards.users import load_users, token_digest
from steer.errors import UserError
from steer.storage import open_storage
from test_actions import via_app


@pytest.fixture
def study(tmp_path, capsys):
    """A SQLite study with one RUNNING trial, and a users file: alice steers, bob watches."""
    url = f"sqlite:///{tmp_path / 'team.db'}"
    optuna.create_study(study_name="acts", storage=open_storage(url, heartbeat=False), direction="maximize").ask()
    users = tmp_path / "users.toml"
    tokens = {}
    for name, role in (("alice", "steer"), ("bob", "view")):
        assert cli_main(["user", name, "--users", str(users), "--role", role]) == 0
        tokens[name] = capsys.readouterr().out.strip()
    return url, users, tokens


def client_of(app, token=None, **headers):
    client = app.server.test_client()
    if token is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    for key, value in headers.items():
        client.environ_base[f"HTTP_{key.upper()}"] = value
    return client


def test_the_users_file_keeps_no_token(study):
    _, users, tokens = study
    text = users.read_text()
    assert tokens["alice"] not in text and token_digest(tokens["alice"]) in text
    assert {u.name: u.role for u in load_users(users).values()} == {"alice": "steer", "bob": "view"}


def test_named_users_sign_in_and_are_recorded(study):
    url, users, tokens = study
    app = create_app(url, users=load_users(users))
    control = Control.open(url, "acts")
    nobody = client_of(app).get("/")
    assert nobody.status_code == 401 and "open it once as /?token=YOUR_TOKEN" in nobody.get_data(as_text=True)
    wrong = client_of(app, "not-a-token").get("/")
    assert wrong.status_code == 401 and "unknown user or wrong token" in wrong.get_data(as_text=True)
    # A browser opens /?token=... once: a cookie that holds the digest, never the token, and a clean URL.
    first = client_of(app).get(f"/trial/0?study=acts&token={tokens['alice']}")
    assert first.status_code == 302 and first.headers["Location"] == "/trial/0?study=acts"
    cookie = first.headers["Set-Cookie"]
    assert tokens["alice"] not in cookie and token_digest(tokens["alice"]) in cookie and "HttpOnly" in cookie
    # The top bar says who is signed in.
    alice = client_of(app, tokens["alice"])
    layout = alice.get("/_dash-layout").get_data(as_text=True)
    assert '"alice"' in layout and "(steers)" in layout
    assert "(watches only)" in client_of(app, tokens["bob"]).get("/_dash-layout").get_data(as_text=True)
    # Alice's command is recorded with her name.
    state, _ = via_app(alice, app, control, 0, "set_optimizer", ("optimizer.value", "sgd"))
    assert state == "pending" and control.commands()[-1].requested_by == "alice"


def test_a_viewer_cannot_steer_and_the_attempt_is_recorded(study):
    url, users, tokens = study
    app = create_app(url, users=load_users(users))
    control = Control.open(url, "acts")
    bob = client_of(app, tokens["bob"])
    for action, trigger in (("pause", ("pause-button.n_clicks", 1)), ("hold", ("study:hold", 1))):
        state, reason = via_app(bob, app, control, 0, action, trigger)
        assert (state, reason) == ("rejected", "bob may watch, not steer (role view)")
        assert control.commands()[-1].requested_by == "bob"
    assert control.held() is None and control.pending(0) == []  # nothing else changed


def test_a_trusted_proxy_header_names_the_user(study):
    url, users, _ = study
    app = create_app(url, users=load_users(users), user_header="X-Forwarded-User")
    control = Control.open(url, "acts")
    assert client_of(app).get("/").status_code == 401  # no name from the proxy: nobody
    alice = client_of(app, X_FORWARDED_USER="alice")
    assert via_app(alice, app, control, 0, "keep", ("keep-button.n_clicks", 1))[0] == "pending"
    assert control.commands()[-1].requested_by == "alice"
    stranger = client_of(app, X_FORWARDED_USER="mallory")  # not in the file: watches only
    assert via_app(stranger, app, control, 0, "keep", ("keep-button.n_clicks", 1)) == \
        ("rejected", "mallory may watch, not steer (role view)")


@pytest.mark.parametrize("text, message", [
    ("[users.carol]\nrole = \"steer\"\n", "[users.carol] token_sha256: expected 64 hex digits"),
    (f"[users.carol]\ntoken_sha256 = \"{'a' * 64}\"\nrole = \"admin\"\n", "[users.carol] role: got 'admin'; allowed: steer | view"),
    ("[people]\n", "expected one [users.NAME] table per user and nothing else"),
    ("[users\n", "not valid TOML"),
])
def test_a_broken_users_file_is_named(tmp_path, text, message):
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=r"users.toml: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        load_users(path)


def test_token_and_users_do_not_mix(study, capsys):
    url, users, _ = study
    assert cli_main(["dash", "--storage", url, "--users", str(users), "--token", "x"]) == 2
    assert "give --token or --users, not both" in capsys.readouterr().err
