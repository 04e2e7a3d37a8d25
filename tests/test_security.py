"""Security properties as tests: keys, no code execution, constant-time signatures, the secret
never shown, cookie defaults, no fixation; and OWASP's idle + absolute timeouts on one session.

The source checks read the package's syntax trees (every module under sessctl/, whoever wrote
it), so a later change that brings in pickle or a non-constant-time compare fails here.
"""

from __future__ import annotations

import ast
import base64
import collections
import json
import logging
import math
import os
import secrets
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

import sessctl
from httpserver import Client, cookie_attrs, raw_get, routes_app, serve
from sessctl import SessionMiddleware, SessionStore, Settings
from sessctl.cli import cli
from sessctl.codec import Codec, _hmac_key
from sessctl.policy import EXPIRY_KEY, IDLE_KEY, RESEND_KEY
from sessctl.store import KEY_CHARS, new_key
from helpers import KEY_RE, SCRIPT, Clock, django, invoke, load, save
from sessctl.session import Session

UTC = timezone.utc
PACKAGE = Path(sessctl.__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("isolated")


def modules() -> dict[str, ast.Module]:
    found = {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}
    assert "sessctl/codec.py" in found and "sessctl/cli/commands/show.py" in found
    return found


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.scenario("session keys")
def test_keys_are_32_chars_of_a_z_0_9_unique_and_uniform():
    keys = [new_key() for _ in range(20000)]
    assert all(KEY_RE.fullmatch(k) for k in keys)
    assert len(set(keys)) == len(keys)
    assert KEY_CHARS == "abcdefghijklmnopqrstuvwxyz0123456789"
    assert 32 * math.log2(len(KEY_CHARS)) >= 128  # about 165 bits
    # Every character equally likely, at every position (chi-square, 35 degrees of freedom;
    # 100 is far beyond the 0.9999 quantile, about 75, so this never flakes on a fair source).
    chars = collections.Counter("".join(keys))
    expected = len(keys) * 32 / 36
    assert sum((chars[c] - expected) ** 2 / expected for c in KEY_CHARS) < 100
    for position in (0, 15, 31):
        column = collections.Counter(k[position] for k in keys)
        expected = len(keys) / 36
        assert sum((column[c] - expected) ** 2 / expected for c in KEY_CHARS) < 100


def test_keys_come_from_secrets(monkeypatch, store):
    drawn = []
    real = secrets.choice

    def choice(seq):
        drawn.append(seq)
        return real(seq)

    monkeypatch.setattr(secrets, "choice", choice)
    session = Session(store)
    session["user"] = 1
    key = session.save()
    session.cycle_key()
    cycled = session.save()
    assert drawn == [KEY_CHARS] * 64 and key != cycled  # both keys: 32 draws each from secrets
    # And nothing else in the package makes keys or tokens from a non-cryptographic source.
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "random" for n in names), f"{name}:{node.lineno} imports random"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "uuid1", "uuid4", "getrandbits"
            ):
                pytest.fail(f"{name}:{node.lineno} makes randomness with {node.func.attr}")


# -- no code execution from data -----------------------------------------------------------


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "yaml"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile", "input"}


def test_nothing_in_the_package_can_execute_data():
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
                assert not bad, f"{name}:{node.lineno} imports {bad}"
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in FORBIDDEN_MODULES, f"{name}:{node.lineno}"
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name):  # the builtins (re.compile is not compile)
                    assert func.id not in FORBIDDEN_CALLS, f"{name}:{node.lineno} calls {func.id}()"
                elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "builtins":
                    assert func.attr not in FORBIDDEN_CALLS, f"{name}:{node.lineno} calls builtins.{func.attr}()"
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    assert func.value.id not in FORBIDDEN_MODULES, f"{name}:{node.lineno} calls {func.value.id}"
                    assert (func.value.id, func.attr) != ("os", "system"), f"{name}:{node.lineno}"
                for kw in node.keywords:  # subprocess(..., shell=True)
                    assert not (kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value), (
                        f"{name}:{node.lineno} runs a shell"
                    )
            elif isinstance(node, ast.Name) and node.id in ("pickle", "marshal"):
                pytest.fail(f"{name}:{node.lineno} names {node.id}")


# -- signatures compared in constant time -----------------------------------------------------


def test_signatures_are_compared_in_constant_time(monkeypatch):
    import hmac

    tree = modules()["sessctl/codec.py"]
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "compare_digest"]
    assert uses, "codec.py does not use hmac.compare_digest"
    # No ==/!= anywhere in the codec on anything that looks like a signature, MAC or digest.
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            text = ast.unparse(node).lower()
            assert not any(w in text for w in ("sig", "mac", "digest", "given", "expected")), text
    # Behaviour: every key is compared with compare_digest, good signature or bad, first key or last.
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((len(a), len(b))) or real(a, b))
    codec = Codec("k1", ["k2", "k3"])
    for value in (Codec("k1").encode({"a": 1}), Codec("k3").encode({"a": 1}), Codec("x").encode({"a": 1}),
                  Codec("k1").encode({"a": 1})[:-5] + "AAAAA"):
        calls.clear()
        codec.verify(value)
        assert len(calls) == 3, value  # no early exit on the first match or mismatch


# -- the secret is never shown ------------------------------------------------------------------


CANARY = "CANARY-Sekr1t-9f4e2b7c"
CANARY_FALLBACK = "CANARY-Old-Sekr1t-31d8"
UNREACHABLE = "postgresql+psycopg://sessctl:pw-CANARY-db@127.0.0.1:1/x"


def leaks(text: str) -> list[str]:
    """Any form of the secrets in ``text``: as given, or the HMAC keys derived from them."""
    forms = []
    for secret in (CANARY, CANARY_FALLBACK):
        derived = _hmac_key(secret)
        forms += [secret, secret.lower(), derived.hex(), base64.b64encode(derived).decode().rstrip("="),
                  base64.urlsafe_b64encode(derived).decode().rstrip("=")]
    forms.append("pw-CANARY-db")
    return [f for f in forms if f in text]


@pytest.mark.scenario("secret never shown")
def test_secret_never_appears_in_any_output_or_log(store, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger, SQLAlchemy's included
    ours = store.settings.replace(secret_key=CANARY, secret_key_fallbacks=(CANARY_FALLBACK,))
    app = SessionStore(ours)
    try:
        key = save(app, None, {"user": 1})
        signed_elsewhere = SessionStore(store.settings.replace(secret_key="another-app")).codec.encode({"u": 2})
        other = app.create_row(signed_elsewhere, app.now() + timedelta(hours=1))
        old = app.create_row(app.codec.encode({"u": 3}), app.now() - timedelta(hours=1))
        garbage = app.create_row("not a session", app.now() + timedelta(hours=1))
        value = app.codec.encode({"user": 1})
    finally:
        app.close()
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(f"{CANARY}\n{CANARY_FALLBACK}\n")
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text(f'secret_key = "{CANARY}"\ncolour = "blue"\n')
    db = ["--db", store.settings.database_url, "--table", store.settings.table]
    env = {"SESSCTL_SECRET_KEY": CANARY, "SESSCTL_SECRET_KEY_FALLBACKS": CANARY_FALLBACK}
    runs = [
        ["init"], ["list"], ["list", "--all", "--json"], ["show", key], ["show", key, "--json"],
        ["show", other], ["show", other, "--no-verify", "--json"], ["show", garbage], ["show", old],
        ["show", "nosuchkey0001"], ["decode", value], ["decode", value, "--json"], ["decode", signed_elsewhere],
        ["decode", "garbage"], ["set-life", key, "8h", "--idle", "30m"], ["set-life", other, "1h"],
        ["set-life", old, "1h"], ["till-browser-close", key], ["reset-life", garbage], ["stats"], ["stats", "--json"],
        ["purge", "--expired", "--dry-run"], ["purge", "--expired", "--json"], ["delete", key, "nosuchkey0001"],
    ]
    outputs = []
    for args in runs:
        for debug in ([], ["--debug"]):
            for how in ("env", "file"):
                extra = ["--secret-key-file", str(secret_file)] if how == "file" else []
                r = CliRunner().invoke(cli, [*debug, *db, *extra, *args], env=env if how == "env" else {})
                outputs.append((args, r.exit_code, r.output))
    for args in (["list"], ["show", key]):  # unreachable database, and a bad config file
        for debug in ([], ["--debug"]):
            r = CliRunner().invoke(cli, [*debug, "--db", UNREACHABLE, *args], env=env)
            outputs.append((args, r.exit_code, r.output))
            r = CliRunner().invoke(cli, [*debug, "--config", str(bad_config), *args])
            outputs.append((args, r.exit_code, r.output))
    # An unexpected error, with its traceback, in the middle of a command that holds the secret.
    from sessctl import store as store_module

    monkeypatch.setattr(store_module.SessionStore, "update", lambda self, *a, **k: 1 / 0)
    r = CliRunner().invoke(cli, ["--debug", *db, "set-life", key, "1h"], env=env)
    assert r.exit_code == 1 and "ZeroDivisionError" in r.stderr and "Traceback" in r.stderr
    outputs.append((["set-life (crash)"], r.exit_code, r.output))
    assert {code for _, code, _ in outputs} == {0, 1}  # both successes and failures were looked at
    for args, code, text in outputs:
        assert not leaks(text), (args, code, leaks(text))
    assert not leaks(caplog.text)
    assert not leaks(repr(ours)) and not leaks(repr(SessionStore(ours))) and not leaks(repr(Codec(CANARY)))


def test_secret_never_appears_in_real_tracebacks(store):
    """The installed command with --debug, failing in three places; stdout and stderr both."""
    if not SCRIPT.exists():
        pytest.skip("the sessctl console script is not installed")
    good = SessionStore(store.settings.replace(secret_key="the-app-key"))
    try:
        key = save(good, None, {"user": 1})
    finally:
        good.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSCTL_")}
    env.update(SESSCTL_SECRET_KEY=CANARY, SESSCTL_SECRET_KEY_FALLBACKS=CANARY_FALLBACK)
    db = ["--db", store.settings.database_url, "--table", store.settings.table]
    for args in ([*db, "set-life", key, "1h"], [*db, "show", key], ["--db", UNREACHABLE, "stats"]):
        r = subprocess.run([str(SCRIPT), "--debug", *args], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1, r.stderr
        assert not leaks(r.stdout + r.stderr), (args, leaks(r.stdout + r.stderr))


# -- cookies ------------------------------------------------------------------------------------


def test_cookie_defaults_are_httponly_samesite_lax_and_secure_is_configurable(store):
    defaults = Settings()
    assert (defaults.cookie_httponly, defaults.cookie_samesite, defaults.cookie_secure) == (True, "Lax", False)

    def login(session, environ):
        session["user"] = "1"

    def me(session, environ):
        return {"user": session.get("user")}

    def logout(session, environ):
        session.flush()

    routes = {"/login": login, "/me": me, "/logout": logout}
    for secure in (False, True):
        st = SessionStore(store.settings.replace(cookie_secure=secure), engine=store.engine)
        try:
            with serve(SessionMiddleware(routes_app(routes), store=st)) as server:
                client = Client(server)
                _, key, attrs = cookie_attrs(client.get("/login").cookie())
                assert attrs["httponly"] is True and attrs["samesite"] == "Lax"
                assert attrs.get("secure", False) is secure
                # A real cookie jar sends a Secure cookie only over https: here (http) it keeps it back.
                assert client.get("/me").json() == {"user": None if secure else "1"}
                _, _, gone = cookie_attrs(raw_get(server, "/logout", cookie=f"sessionid={key}").cookie())
                assert gone["max-age"] == "0" and gone.get("secure", False) is secure
                server.assert_no_errors()
        finally:
            st.close()


# -- fixation ---------------------------------------------------------------------------------


def test_cycle_key_on_login_drops_the_old_row(store):
    def browse(session, environ):
        session["cart"] = "book"

    def login(session, environ):
        session.cycle_key()
        session["user"] = "alice"

    def whoami(session, environ):
        return {"user": session.get("user"), "cart": session.get("cart")}

    with serve(SessionMiddleware(routes_app({"/browse": browse, "/login": login, "/me": whoami}), store=store)) as server:
        client = Client(server)
        client.get("/browse")
        before = client.cookie_value()
        r = client.get("/login")
        after = cookie_attrs(r.cookie())[1]
        assert after != before and KEY_RE.fullmatch(after)
        assert store.get_row(before) is None  # the old row is gone, not merely unused
        assert {row.key for row in store.iter_rows("all")} == {after}
        assert client.get("/me").json() == {"user": "alice", "cart": "book"}
        # The pre-login key (what a fixation attacker planted) opens nothing, and is not re-created.
        stolen = raw_get(server, "/me", cookie=f"sessionid={before}")
        assert stolen.json() == {"user": None, "cart": None}
        assert store.get_row(before) is None
        server.assert_no_errors()


def test_a_key_from_the_client_is_never_adopted(store):
    """Unknown, malformed, expired, logged-out or forged: the session gets a fresh key of ours,
    and no row is ever written under the key the client sent."""
    live = save(store, None, {"user": "bob"})
    expired = store.create_row(store.codec.encode({"user": "old"}), store.now() - timedelta(seconds=1))
    logged_out = save(store, None, {"user": "gone"})
    store.delete(logged_out)
    forged = store.create_row(Codec("attacker-key").encode({"user": "admin"}), store.now() + timedelta(hours=1))
    chosen = [new_key(), expired, logged_out, forged, "a" * 40, "a" * 8, "a" * 7, "A" * 32, live.upper(),
              f"{live}%00", f"{live[:-1]}", live + "0", "' OR '1'='1", "../" + live]

    def write(session, environ):
        session["x"] = 1
        return {"user": session.get("user"), "key": session.session_key}

    with serve(SessionMiddleware(routes_app({"/": write}), store=store)) as server:
        for sent in chosen:
            before = {row.key: row.session_data for row in store.iter_rows("all")}
            r = raw_get(server, "/", cookie=f"sessionid={sent}")
            assert r.status == 200 and r.json()["user"] is None, sent
            _, key, _ = cookie_attrs(r.cookie())
            assert KEY_RE.fullmatch(key) and key != sent and key not in before, sent
            after = {row.key: row.session_data for row in store.iter_rows("all")}
            assert set(after) - set(before) == {key}, sent  # only the fresh row is new
            assert {k: after.get(k) for k in before} == before, sent  # nothing else changed
        server.assert_no_errors()


# -- idle and absolute limits on one session (OWASP) ---------------------------------------------


@pytest.mark.scenario("idle + absolute limits")
def test_idle_and_absolute_limits_through_the_runtime_api(store):
    """set_life(8h, idle=30m): each save slides the row to now + 30 min, never past the deadline;
    the cookie says the same; whichever limit comes first ends the session."""
    clock = Clock()
    # Saves alone slide it here (the activity touch, which slides it on reads too, is test_touch.py's).
    app_store = SessionStore(store.settings.replace(touch=False), engine=store.engine, clock=clock)

    def login(session, environ):
        session["user"] = "alice"
        session.set_life(8 * 3600, idle=1800)

    def touch(session, environ):
        session["n"] = session.get("n", 0) + 1

    def read(session, environ):
        return {"user": session.get("user")}

    app = SessionMiddleware(routes_app({"/login": login, "/touch": touch, "/read": read}), store=app_store)
    with serve(app) as server:
        client = Client(server)
        start = clock.now
        deadline = start + timedelta(hours=8)
        _, key, attrs = cookie_attrs(client.get("/login").cookie())
        data = app_store.codec.decode(store.get_row(key).session_data)
        assert data[EXPIRY_KEY] == deadline.isoformat() and data[IDLE_KEY] == 1800
        assert store.get_row(key).expire_date == start + timedelta(seconds=1800)
        assert attrs["max-age"] == "1800"
        # Active use, a request every 1700 s at most: the idle limit slides, until the deadline
        # is the earlier; then the deadline wins, on the row and in the cookie.
        last = deadline - timedelta(seconds=600)
        max_ages = []
        while clock.now < last:
            clock.now = min(clock.now + timedelta(seconds=1700), last)
            r = client.get("/touch")
            expected = min(clock.now + timedelta(seconds=1800), deadline)
            assert store.get_row(key).expire_date == expected
            max_ages.append(int(cookie_attrs(r.cookie())[2]["max-age"]))
            assert max_ages[-1] == int((expected - clock.now).total_seconds())
        assert max_ages[0] == 1800 and max_ages[-1] == 600 and len(max_ages) > 15
        clock.now = deadline + timedelta(seconds=1)
        assert raw_get(server, "/read", cookie=f"sessionid={key}").json() == {"user": None}
        # A second session left idle: the idle limit wins, long before the deadline.
        other = Client(server)
        _, idle_key, _ = cookie_attrs(other.get("/login").cookie())
        clock.advance(1799)
        assert raw_get(server, "/read", cookie=f"sessionid={idle_key}").json() == {"user": "alice"}
        clock.advance(2)
        assert raw_get(server, "/read", cookie=f"sessionid={idle_key}").json() == {"user": None}
        server.assert_no_errors()
    app_store.close()


def test_set_life_with_an_idle_limit_from_the_command_line(store):
    def read(session, environ):
        return {"user": session.get("user")}

    with serve(SessionMiddleware(routes_app({"/read": read}), store=store)) as server:
        key = save(store, None, {"user": "alice"})
        now = datetime.now(UTC)
        r = invoke(store.settings, "set-life", key, "8h", "--idle", "30m", code=0)
        assert "absolute, until" in r.stderr and "or after 30m idle" in r.stderr
        row = store.get_row(key)
        data = store.codec.decode(row.session_data)
        deadline = datetime.fromisoformat(data[EXPIRY_KEY])
        assert abs((deadline - now - timedelta(hours=8)).total_seconds()) < 30
        assert data[IDLE_KEY] == 1800 and data[RESEND_KEY] is True
        assert abs((row.expire_date - now - timedelta(minutes=30)).total_seconds()) < 30
        # The next response re-sends the cookie with the earlier limit.
        r = raw_get(server, "/read", cookie=f"sessionid={key}")
        assert r.json() == {"user": "alice"} and 1790 <= int(cookie_attrs(r.cookie())[2]["max-age"]) <= 1800
        # Every view of it shows both limits.
        info = json.loads(invoke(store.settings, "show", key, "--json", code=0).stdout)
        assert info["lifetime"] == {"kind": "absolute", "deadline": deadline.isoformat(), "idle_seconds": 1800}
        assert "or after 30m idle" in invoke(store.settings, "show", key, code=0).stdout
        assert json.loads(invoke(store.settings, "list", "--json", secret=None, code=0).stdout)[0]["lifetime"] == info["lifetime"]
        assert "absolute+idle" in invoke(store.settings, "list", secret=None, code=0).stdout
        stats = json.loads(invoke(store.settings, "stats", "--json", secret=None, code=0).stdout)
        assert stats["by_kind"]["absolute"] == 1 and stats["absolute_with_idle"] == 1
        assert "+ idle limit" in invoke(store.settings, "stats", secret=None, code=0).stdout
        # An idle limit longer than the deadline cannot matter, and says so.
        r = invoke(store.settings, "set-life", key, "1h", "--idle", "2h", code=0)
        assert "only the deadline can matter" in r.stderr
        assert abs((store.get_row(key).expire_date - datetime.now(UTC) - timedelta(hours=1)).total_seconds()) < 30
        # Another lifetime replaces both limits: no idle limit is left behind.
        invoke(store.settings, "set-life", key, "2h", code=0)
        assert IDLE_KEY not in store.codec.decode(store.get_row(key).session_data)
        invoke(store.settings, "set-life", key, "8h", "--idle", "30m", code=0)
        invoke(store.settings, "till-browser-close", key, code=0)
        data = store.codec.decode(store.get_row(key).session_data)
        assert data[EXPIRY_KEY] == 0 and IDLE_KEY not in data
        invoke(store.settings, "set-life", key, "8h", "--idle", "30m", code=0)
        invoke(store.settings, "reset-life", key, code=0)
        data = store.codec.decode(store.get_row(key).session_data)
        assert EXPIRY_KEY not in data and IDLE_KEY not in data
        # --idle with a value and no DURATION: an idle timeout, as `set-life KEY 30m --idle`.
        invoke(store.settings, "set-life", key, "--idle", "30m", code=0)
        data = store.codec.decode(store.get_row(key).session_data)
        assert data[EXPIRY_KEY] == 1800 and IDLE_KEY not in data
        server.assert_no_errors()


def test_django_reads_a_session_with_both_limits_and_sees_the_deadline(store):
    """Django sees `_session_expiry` (the deadline) and ignores `_sessctl_idle`: for Django the
    session is an absolute one, ending at the deadline, while the row ends at the idle limit."""
    pytest.importorskip("django")
    session = Session(store)
    session["user"] = 7
    session.set_life(8 * 3600, idle=1800)
    key = session.save()
    deadline = datetime.fromisoformat(session[EXPIRY_KEY])
    seen = django(store.settings, "load", "--key", key)
    assert seen["key_after"] == key and seen["exists"] is True
    assert seen["data"] == {"user": 7, EXPIRY_KEY: deadline.isoformat(), IDLE_KEY: 1800}
    assert datetime.fromisoformat(seen["expiry_date"]) == deadline  # exactly the deadline
    assert abs(seen["expiry_age"] - 8 * 3600) <= 5
    assert seen["browser_close"] is False
    # Django writing to it stores the row's expiry as the deadline (it knows no idle limit);
    # our next save brings the idle limit back.
    django(store.settings, "set-item", "--key", key, "--name", "from", "--value", '"django"')
    assert store.get_row(key).expire_date == deadline
    again = Session(store, key)
    again["n"] = 1
    again.save()
    assert abs((store.get_row(key).expire_date - datetime.now(UTC) - timedelta(seconds=1800)).total_seconds()) < 30
    assert load(store, key) == {"user": 7, "from": "django", "n": 1, EXPIRY_KEY: deadline.isoformat(), IDLE_KEY: 1800}
    # Once the idle limit has passed on the server, Django does not load it either.
    row = store.get_row(key)
    assert store.swap_row(row, row.session_data, datetime.now(UTC) - timedelta(seconds=1))
    assert django(store.settings, "load", "--key", key)["data"] == {}
