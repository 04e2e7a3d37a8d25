"""sessctl.flask through Flask's own test client (and its cookie jar), on every backend.

Each test builds a small Flask app whose ``session`` is sessctl's
(``sessctl.flask.install``) and drives it with ``app.test_client()``.
Server-side time travel uses the store's ``clock``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask, abort, flash, get_flashed_messages, jsonify, request, session
from werkzeug.test import Client as WSGIClient

from httpserver import StatementLog, cookie_attrs, routes_app
from sessctl import SessionMiddleware, SessionStore, Settings, TILL_BROWSER_CLOSE
from sessctl.config import ConfigError
from sessctl.flask import FlaskSession, SessctlSessionInterface, install
from sessctl.policy import EXPIRY_KEY, RESEND_KEY
from sessctl.store import new_key
from helpers import AGE, DELETION, KEY_RE, Clock, save, load

UTC = timezone.utc





def build_app(store: SessionStore) -> Flask:
    app = Flask("sessctl_flask_test")
    install(app, store=store)

    @app.get("/none")
    def none():
        return "untouched"

    @app.get("/touch")
    def touch():
        return {"modified": session.modified}  # the proxy is touched, the data is not

    @app.get("/read")
    def read():
        return jsonify(data=dict(session), key=session.session_key)

    @app.get("/write")
    def write():
        for name, value in request.args.items():
            session[name] = value
        if not request.args:
            session["n"] = session.get("n", 0) + 1
        return {"key": session.session_key}

    @app.get("/clear")
    def clear():
        session.clear()
        return "cleared"

    @app.get("/login")
    def login():
        session.cycle_key()
        session["user"] = request.args.get("user", "alice")
        return "in"

    @app.get("/logout")
    def logout():
        session.flush()
        return "out"

    @app.get("/browser-close")
    def browser_close():
        session.set_life(TILL_BROWSER_CLOSE)
        return "ok"

    @app.get("/life-3600")
    def life_3600():
        session.set_life(3600)
        return "ok"

    @app.get("/idle-3600")
    def idle_3600():
        session.set_life(3600, idle=True)
        return "ok"

    @app.get("/life-none")
    def life_none():
        session.set_life(None)
        return "ok"

    @app.get("/permanent/<state>")
    def permanent(state):
        session.permanent = state == "on"
        return {"permanent": session.permanent}

    @app.get("/expiry")
    def expiry():
        return {
            "age": session.get_expiry_age(),
            "date": session.get_expiry_date().isoformat(),
            "browser_close": session.get_expire_at_browser_close(),
            "permanent": session.permanent,
            "new": session.new,
        }

    @app.get("/fail")
    def fail():
        session["user"] = "changed"
        return "failed", int(request.args.get("status", 500))

    @app.get("/crash")
    def crash():
        session["user"] = "changed"
        raise RuntimeError("boom")

    @app.get("/abort")
    def aborted():
        session["user"] = "changed"
        abort(503)

    @app.get("/gone")
    def gone():
        key = session.session_key
        session.get("user")  # loaded
        store.delete(key)  # logout elsewhere, `sessctl delete`, purge...
        session["user"] = "resurrected?"
        return "ok"

    @app.get("/flash")
    def do_flash():
        flash("saved")
        return "ok"

    @app.get("/flashes")
    def flashes():
        return {"messages": get_flashed_messages()}

    return app


@dataclass
class Web:
    app: Flask
    client: Any
    store: SessionStore

    def get(self, path: str = "/", **kw: Any) -> Any:
        return self.client.get(path, **kw)

    def raw(self, path: str = "/", cookie: str | None = None) -> Any:
        """A request with exactly this Cookie header, outside the jar."""
        headers = {"Cookie": cookie} if cookie is not None else {}
        return self.app.test_client(use_cookies=False).get(path, headers=headers)

    @property
    def key(self) -> str | None:
        c = self.client.get_cookie("sessionid")
        return None if c is None else c.value

    def data(self, key: str | None = None) -> dict[str, Any] | None:
        row = self.store.get_row(key or self.key)
        return None if row is None else self.store.codec.decode(row.session_data)

    def rows(self) -> list[str]:
        return sorted(r.key for r in self.store.iter_rows("all"))


def set_cookies(r: Any) -> list[str]:
    return r.headers.getlist("Set-Cookie")


def cookie(r: Any, name: str = "sessionid") -> str | None:
    found = [c for c in set_cookies(r) if c.split("=", 1)[0] == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def vary(r: Any) -> list[str]:
    return [v.strip().lower() for value in r.headers.getlist("Vary") for v in value.split(",") if v.strip()]


@pytest.fixture
def web(store):
    """``web(clock=..., **settings)``: a Flask app on its own store (sharing the test's engine)."""
    made: list[SessionStore] = []

    def start(*, clock=None, **overrides: Any) -> Web:
        settings = store.settings.replace(**overrides) if overrides else store.settings
        st = SessionStore(settings, engine=store.engine, clock=clock)
        made.append(st)
        app = build_app(st)
        return Web(app, app.test_client(), st)

    yield start
    for st in made:
        st.close()


@pytest.fixture
def log(store):
    with StatementLog(store.engine, store.settings.table) as statements:
        yield statements


def login(w: Web, **data: str) -> str:
    for name, value in (data or {"user": "1"}).items():
        assert w.get(f"/write?{name}={value}").status_code == 200
    assert w.key and KEY_RE.fullmatch(w.key)
    return w.key


# -- untouched, read, write ----------------------------------------------------------------


def test_untouched_request_runs_no_query_and_sends_no_cookie(web, log):
    w = web()
    r = w.get("/none")
    assert r.status_code == 200 and set_cookies(r) == [] and vary(r) == []
    key = login(w)
    log.clear()
    r = w.get("/none")  # with a valid session cookie
    assert set_cookies(r) == [] and vary(r) == []
    r = w.raw("/none", cookie=f"sessionid={new_key()}")  # with an unknown one
    assert set_cookies(r) == [] and vary(r) == []
    # Touching the proxy without reading data: Flask's Vary, still no query.
    r = w.get("/touch")
    assert r.json == {"modified": False} and set_cookies(r) == [] and vary(r) == ["cookie"]
    assert log.kinds == []
    assert w.key == key


def test_create_read_modify_and_their_queries(web, log):
    w = web()
    log.clear()
    r = w.get("/write?user=1")
    assert log.kinds == ["INSERT"]
    header = cookie(r)
    assert re.fullmatch(
        r"sessionid=[a-z0-9]{32}; expires=\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT; HttpOnly; "
        r"Max-Age=1209600; Path=/; SameSite=Lax",
        header,
    ), header
    assert vary(r) == ["cookie"]
    key = w.key
    assert cookie_attrs(header)[1] == key
    log.clear()
    r = w.get("/read")
    assert log.kinds == ["SELECT"]
    assert r.json == {"data": {"user": "1"}, "key": key}
    assert set_cookies(r) == [] and vary(r) == ["cookie"]
    log.clear()
    r = w.get("/write?cart=2")
    assert log.kinds == ["SELECT", "UPDATE"]
    assert cookie_attrs(cookie(r))[1] == key
    assert w.data(key) == {"user": "1", "cart": "2"}


def test_new_session_that_sets_nothing_gets_no_cookie_and_no_row(web, log):
    w = web()
    r = w.get("/read")
    assert r.json == {"data": {}, "key": None}
    assert set_cookies(r) == [] and vary(r) == ["cookie"]
    assert log.kinds == []  # no key, nothing to look up
    assert w.rows() == []


def test_vary_cookie_is_merged_into_an_existing_vary(web):
    w = web()

    @w.app.get("/vary")
    def with_vary():
        session.get("x")
        return "ok", 200, {"Vary": "Accept-Encoding"}

    r = w.get("/vary")
    assert vary(r) == ["accept-encoding", "cookie"] and len(r.headers.getlist("Vary")) == 1


def test_nested_mutation_needs_modified(web):
    w = web()

    @w.app.get("/init")
    def init():
        session["foo"] = {}
        return "ok"

    @w.app.get("/nested")
    def nested():
        session["foo"]["bar"] = int(request.args["v"])
        session.modified = request.args.get("mark") == "1"
        return "ok"

    w.get("/init")
    key = w.key
    assert set_cookies(w.get("/nested?v=1")) == []
    assert w.data(key) == {"foo": {}}
    assert cookie(w.get("/nested?v=2&mark=1")) is not None
    assert w.data(key) == {"foo": {"bar": 2}}


def test_save_every_request_resaves_and_resends(web, log):
    clock = Clock()
    w = web(clock=clock, save_every_request=True)
    assert set_cookies(w.get("/none")) == []
    key = login(w)
    clock.advance(60)
    log.clear()
    r = w.get("/none")
    assert cookie_attrs(cookie(r))[1] == key and "cookie" in vary(r)
    assert log.kinds == ["SELECT", "UPDATE"]
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=AGE)
    r = w.raw("/none", cookie=f"sessionid={new_key()}")  # an unknown key is not turned into a row
    assert cookie(r) == DELETION
    assert w.rows() == [key]


# -- lifetimes -----------------------------------------------------------------------------


def test_set_life_variants_and_their_cookies(web):
    clock = Clock()
    w = web(clock=clock)
    key = login(w)
    # TILL_BROWSER_CLOSE: no Max-Age, no Expires; the server keeps the row for cookie_age.
    r = w.get("/browser-close")
    name, value, attrs = cookie_attrs(cookie(r))
    assert value == key and "max-age" not in attrs and "expires" not in attrs
    assert w.data() == {"user": "1", EXPIRY_KEY: 0}
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=AGE)
    assert w.get("/expiry").json["browser_close"] is True
    # An absolute hour.
    _, _, attrs = cookie_attrs(cookie(w.get("/life-3600")))
    assert attrs["max-age"] == "3600"
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=3600)
    clock.advance(600)
    e = w.get("/expiry").json
    assert e["age"] == 3000 and e["browser_close"] is False
    # Idle: Max-Age = N at each save (sliding).
    _, _, attrs = cookie_attrs(cookie(w.get("/idle-3600")))
    assert attrs["max-age"] == "3600"
    clock.advance(600)
    w.get("/write?touch=1")
    assert w.store.get_row(key).expire_date == clock.now + timedelta(seconds=3600)
    # Back to the global policy.
    _, _, attrs = cookie_attrs(cookie(w.get("/life-none")))
    assert attrs["max-age"] == str(AGE)
    assert EXPIRY_KEY not in w.data()
    # The absolute life ends on the server even while the client still sends the cookie.
    w.get("/life-3600")
    clock.advance(3601)
    assert w.get("/read").json["data"] == {}


def test_global_browser_close_with_a_per_session_life(web):
    w = web(expire_at_browser_close=True)
    login(w)
    _, _, attrs = cookie_attrs(cookie(w.get("/write?a=1")))
    assert "max-age" not in attrs
    _, _, attrs = cookie_attrs(cookie(w.get("/life-3600")))
    assert attrs["max-age"] in ("3599", "3600")


def test_permanent_maps_to_browser_close_and_back(web, log):
    w = web()
    key = login(w)
    assert w.get("/expiry").json["permanent"] is True  # the global policy is persistent
    # Already permanent: the before_request idiom costs a read, no write and no cookie.
    log.clear()
    r = w.get("/permanent/on")
    assert r.json == {"permanent": True} and set_cookies(r) == [] and log.kinds == ["SELECT"]
    r = w.get("/permanent/off")
    _, _, attrs = cookie_attrs(cookie(r))
    assert r.json == {"permanent": False} and "max-age" not in attrs
    assert w.data(key)[EXPIRY_KEY] == 0
    r = w.get("/permanent/on")
    _, _, attrs = cookie_attrs(cookie(r))
    assert attrs["max-age"] == str(AGE) and EXPIRY_KEY not in w.data(key)


def test_permanent_under_a_browser_close_global_policy(web):
    w = web(expire_at_browser_close=True)
    key = login(w)
    assert w.get("/expiry").json["permanent"] is False
    r = w.get("/permanent/on")
    _, _, attrs = cookie_attrs(cookie(r))
    assert attrs["max-age"] == str(AGE)
    assert w.data(key)[EXPIRY_KEY] == AGE  # the global age, as an idle timeout
    _, _, attrs = cookie_attrs(cookie(w.get("/permanent/off")))
    assert "max-age" not in attrs


def test_interface_reports_sessctl_cookie_settings(web):
    w = web(cookie_name="sid", cookie_path="/app", cookie_domain="example.com", cookie_secure=True)
    iface = w.app.session_interface
    assert isinstance(iface, SessctlSessionInterface)
    assert iface.get_cookie_name(w.app) == "sid"
    assert iface.get_cookie_path(w.app) == "/app"
    assert iface.get_cookie_domain(w.app) == "example.com"
    assert iface.get_cookie_secure(w.app) is True and iface.get_cookie_samesite(w.app) == "Lax"
    assert w.app.extensions["sessctl"] is iface
    with w.app.test_request_context("/"):
        s = iface.open_session(w.app, request)
        assert iface.get_expiration_time(w.app, s) is not None and not iface.should_set_cookie(w.app, s)
        s.permanent = False
        assert iface.get_expiration_time(w.app, s) is None and iface.should_set_cookie(w.app, s)


def test_lifetime_set_by_another_writer_reaches_the_next_cookie(web):
    w = web()
    key = login(w)
    w.store.update(key, lambda d: d.__setitem__(EXPIRY_KEY, 0), resend=True)  # as `sessctl till-browser-close`
    r = w.get("/none")
    assert set_cookies(r) == []  # untouched: the signal waits for a request that uses the session
    r = w.get("/read")
    assert r.json["data"] == {"user": "1", EXPIRY_KEY: 0}
    _, value, attrs = cookie_attrs(cookie(r))
    assert value == key and "max-age" not in attrs and "expires" not in attrs
    assert RESEND_KEY not in w.data(key)
    assert set_cookies(w.get("/read")) == []  # sent once


# -- keys: login, logout, emptied, unknown, tampered ------------------------------------------


def test_cycle_key_on_login(web):
    w = web()
    old = login(w, cart="x")
    r = w.get("/login?user=7")
    new = cookie_attrs(cookie(r))[1]
    assert new != old and KEY_RE.fullmatch(new) and w.key == new
    assert w.data(new) == {"cart": "x", "user": "7"}
    assert w.store.get_row(old) is None and w.rows() == [new]
    assert w.raw("/read", cookie=f"sessionid={old}").json["data"] == {}


def test_flush_on_logout_deletes_row_and_cookie(web):
    w = web()
    key = login(w)
    r = w.get("/logout")
    assert set_cookies(r) == [DELETION] and vary(r) == ["cookie"]
    assert w.store.get_row(key) is None and w.rows() == []
    assert w.key is None
    r = w.get("/logout")  # no cookie any more: nothing to delete
    assert set_cookies(r) == [] and vary(r) == ["cookie"]


def test_session_emptied_by_the_view_is_deleted_with_its_cookie(web):
    w = web()
    key = login(w, a="1", b="2")
    r = w.get("/clear")
    assert cookie(r) == DELETION and "cookie" in vary(r)
    assert w.store.get_row(key) is None and w.key is None


@pytest.mark.parametrize("cookie_value", ["unknown", "malformed", "tampered"])
def test_client_key_is_never_adopted(web, cookie_value):
    w = web()
    sent = new_key()
    if cookie_value == "malformed":
        sent = "../../etc/passwd"
    elif cookie_value == "tampered":
        assert w.store.insert_row(sent, "not:a:signature", datetime.now(UTC) + timedelta(days=1))
    r = w.raw("/read", cookie=f"sessionid={sent}")
    assert r.json == {"data": {}, "key": None}
    assert cookie(r) == DELETION  # the stale cookie goes
    r = w.raw("/write?user=1", cookie=f"sessionid={sent}")
    new = cookie_attrs(cookie(r))[1]
    assert new != sent and KEY_RE.fullmatch(new)
    assert w.data(new) == {"user": "1"}
    if cookie_value == "tampered":
        assert w.store.get_row(sent).session_data == "not:a:signature"  # untouched, not adopted


def test_session_deleted_during_the_request_is_not_recreated(web):
    w = web()
    key = login(w)
    r = w.get("/gone")
    assert r.status_code == 200
    assert cookie(r) == DELETION
    assert w.store.get_row(key) is None and w.rows() == []
    assert w.key is None


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/fail?status=500", "/fail?status=503", "/crash", "/abort"])
def test_nothing_is_saved_on_a_5xx(web, path):
    w = web()
    key = login(w)
    before = w.store.get_row(key)
    r = w.get(path)
    assert r.status_code >= 500
    assert set_cookies(r) == []
    assert w.store.get_row(key) == before
    fresh = w.app.test_client()
    r = fresh.get(path)
    assert r.status_code >= 500 and set_cookies(r) == []
    assert w.rows() == [key]


def test_missing_secret_key_fails_at_install(settings):
    app = Flask("no_secret")
    with pytest.raises(ConfigError, match="secret key"):
        install(app, settings.replace(secret_key=None))
    with pytest.raises(TypeError):
        SessctlSessionInterface()


# -- Flask idioms --------------------------------------------------------------------------


def test_session_transaction_and_flash(web):
    w = web()
    with w.client.session_transaction() as s:
        assert isinstance(s, FlaskSession)
        s["user"] = "seeded"
    key = w.key
    assert KEY_RE.fullmatch(key) and w.data(key) == {"user": "seeded"}
    assert w.get("/read").json["data"] == {"user": "seeded"}
    w.get("/flash")
    assert w.get("/flashes").json == {"messages": ["saved"]}
    assert w.get("/flashes").json == {"messages": []}
    assert w.data(key) == {"user": "seeded"}


def test_new_is_true_until_stored(web):
    w = web()
    assert w.get("/expiry").json["new"] is True
    login(w)
    assert w.get("/expiry").json["new"] is False


# -- the same sessions through Flask, the WSGI middleware and the store -----------------------


def test_sessions_are_shared_with_the_wsgi_middleware_and_the_store(web):
    w = web()
    wsgi = SessionMiddleware(
        routes_app({
            "/read": lambda s, e: {"data": dict(s.items())},
            "/write": lambda s, e: s.__setitem__("from", "wsgi"),
        }),
        store=w.store,
    )
    # Flask -> WSGI middleware and store
    key = login(w, user="flask")
    assert load(w.store, key) == {"user": "flask"}
    wc = WSGIClient(wsgi, use_cookies=False)
    r = wc.get("/read", headers={"Cookie": f"sessionid={key}"})
    assert r.json == {"data": {"user": "flask"}}
    r = wc.get("/write", headers={"Cookie": f"sessionid={key}"})
    assert cookie_attrs(r.headers["Set-Cookie"])[1] == key
    assert w.get("/read").json["data"] == {"user": "flask", "from": "wsgi"}
    # WSGI middleware -> Flask
    r = WSGIClient(wsgi, use_cookies=False).get("/write")
    other = cookie_attrs(r.headers["Set-Cookie"])[1]
    assert w.raw("/read", cookie=f"sessionid={other}").json["data"] == {"from": "wsgi"}
    # store -> Flask
    third = save(w.store, None, {"from": "store"})
    assert w.raw("/read", cookie=f"sessionid={third}").json["data"] == {"from": "store"}


# -- layering ------------------------------------------------------------------------------


def test_only_sessctl_flask_imports_flask():
    code = (
        "import sys, sessctl.flask\n"
        "assert 'flask' in sys.modules\n"
        "bad = [m for m in ('starlette', 'anyio', 'fastapi', 'httpx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_install_without_arguments_loads_settings_as_the_cli_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SESSCTL_DB", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("SESSCTL_SECRET_KEY", "from-the-environment")
    for var in ("SESSCTL_CONFIG", "SESSCTL_TABLE", "SESSCTL_SECRET_KEY_FILE", "SESSCTL_SECRET_KEY_FALLBACKS"):
        monkeypatch.delenv(var, raising=False)
    app = Flask("from_env")
    iface = install(app)
    try:
        assert iface.settings.database_url.endswith("env.db")
        assert iface.settings.secret_key == "from-the-environment"
    finally:
        iface.store.close()


def test_settings_alone_are_enough(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", secret_key="k")
    app = Flask("from_settings")
    iface = install(app, settings)
    try:
        iface.store.create_table()
        c = app.test_client()

        @app.get("/")
        def index():
            session["hits"] = session.get("hits", 0) + 1
            return {"hits": session["hits"]}

        assert [c.get("/").json["hits"] for _ in range(3)] == [1, 2, 3]
    finally:
        iface.store.close()
