"""sessctl.flask through Flask's own test client (and its cookie jar), on every backend.

Each test builds a small Flask app whose ``session`` is sessctl's
(``sessctl.flask.install``) and drives it with ``app.test_client()``.
Server-side time travel uses the store's ``clock``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import timezone
from typing import Any

import pytest
from flask import Flask, request, session

from httpserver import cookie_attrs
from sessctl import SessionStore, Settings
from sessctl.config import ConfigError
from sessctl.flask import FlaskSession, SessctlSessionInterface, install
from sessctl.policy import EXPIRY_KEY
from sessctl.store import new_key
from adapters import build_flask_app, login
from helpers import AGE, KEY_RE

UTC = timezone.utc


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
        app = build_flask_app(st)
        return Web(app, app.test_client(), st)

    yield start
    for st in made:
        st.close()


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


# -- lifetimes -----------------------------------------------------------------------------


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


# -- keys: login, logout, emptied, unknown, tampered ------------------------------------------


# -- failures ------------------------------------------------------------------------------


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
