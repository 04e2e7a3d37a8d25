"""The example app: log in with a chosen lifetime, comment, log out."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from sessctl.config import Settings
from sessctl.middleware import SessionMiddleware, get_session
from sessctl.policy import ABSOLUTE, BROWSER_CLOSE, IDLE, TILL_BROWSER_CLOSE, format_seconds
from sessctl.session import Session
from sessctl.store import SessionStore


HOST = "127.0.0.1"
REMEMBER_ME = 30 * 86400
LIVES = {
    "remember": "Remember me for 30 days",
    "public": "Public computer: forget me when the browser closes",
    "default": "Neither (the site default)",
}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,20}")


# -- the example app ------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessctl demo</title></head>
<body>
<h1><a href="/">sessctl demo</a></h1>
<p id="status">{status}</p>
{body}
<hr>
<nav><a href="/">Home</a> · <a href="/login">Log in</a> · <a href="/comment">Post a comment</a> ·
<form method="post" action="/logout" style="display:inline"><button>Log out</button></form></nav>
</body></html>
"""

_LOGIN_FORM = (
    '<form id="login" method="post" action="/login">\n'
    '<p><label>User name <input name="username" required maxlength="20"></label> (no password in this demo)</p>\n'
    + "".join(
        f'<p><label><input type="radio" name="life" id="{value}" value="{value}"'
        f'{" checked" if value == "default" else ""}> {text}</label></p>\n'
        for value, text in LIVES.items()
    )
    + "<p><button>Log in</button></p>\n</form>"
)
_COMMENT_FORM = (
    '<form id="comment" method="post" action="/comment">\n'
    '<p><textarea name="comment" rows="3" cols="40">Nice sessions.</textarea></p>\n'
    "<p><button>Post</button></p>\n</form>"
)


def lifetime_text(session: Session) -> str:
    """How long this session lives, in words, read back from the session itself."""
    lifetime = session.lifetime
    left = format_seconds(session.get_expiry_age())
    if lifetime.kind == BROWSER_CLOSE:
        return "this session ends when you close the browser"
    if lifetime.kind == ABSOLUTE and lifetime.deadline is not None:
        return f"this session ends {lifetime.deadline:%Y-%m-%d %H:%M} UTC (in {left})"
    if lifetime.kind == IDLE:
        return f"this session ends after {left} without a visit"
    return f"this session ends {left} after its last change (the site default)"


def home(session: Session, form: dict[str, str] | None) -> tuple[str, str]:
    member = session.get("member")
    if member is None:
        return "Not logged in.", '<p><a href="/login">Log in</a></p>'
    return f"Logged in as {member}; {lifetime_text(session)}.", ""


def login(session: Session, form: dict[str, str] | None) -> tuple[str, str]:
    if form is None:
        session.set_test_cookie()  # checked by the POST: the next request tells whether cookies work
        return "Log in.", _LOGIN_FORM
    if not session.test_cookie_worked():
        return "Please enable cookies and try again.", ""
    name = form.get("username", "").strip()
    if not _NAME.fullmatch(name):
        return "A user name is 1 to 20 letters, digits, - or _.", _LOGIN_FORM
    session.delete_test_cookie()
    session.cycle_key()  # a new key at login: a key known before it (session fixation) is worth nothing
    session["member"] = name
    life = form.get("life")
    session.set_life(REMEMBER_ME if life == "remember" else TILL_BROWSER_CLOSE if life == "public" else None)
    return f"You're logged in as {name}; {lifetime_text(session)}.", ""


def logout(session: Session, form: dict[str, str] | None) -> tuple[str, str]:
    session.flush()
    return "You're logged out.", ""


def comment(session: Session, form: dict[str, str] | None) -> tuple[str, str]:
    if form is None:
        return "Post a comment (only once per session).", _COMMENT_FORM
    if session.get("has_commented", False):
        return "You've already commented.", ""
    session["has_commented"] = True
    return "Thanks for your comment!", ""


ROUTES: dict[str, tuple[Callable[..., tuple[str, str]], tuple[str, ...]]] = {
    "/": (home, ("GET",)),
    "/login": (login, ("GET", "POST")),
    "/logout": (logout, ("POST",)),
    "/comment": (comment, ("GET", "POST")),
}


def _form(environ: dict[str, Any]) -> dict[str, str]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), 64 * 1024)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body).items()}


def example_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The seed's examples as a WSGI app; wrap it in SessionMiddleware (see :func:`make_app`)."""
    path = environ.get("PATH_INFO") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    view, methods = ROUTES.get(path, (None, ()))
    if view is None:
        status, text, body = "404 Not Found", "No such page.", ""
    elif method not in methods:
        status, text, body = "405 Method Not Allowed", f"Use {' or '.join(methods)} here.", ""
    else:
        status = "200 OK"
        text, body = view(get_session(environ), _form(environ) if method == "POST" else None)
    page = _PAGE.format(status=html.escape(text), body=body).encode()
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))]
    if status.startswith("405"):
        headers.append(("Allow", ", ".join(methods)))
    start_response(status, headers)
    return [page]


def make_app(settings: Settings | None = None, *, store: SessionStore | None = None) -> SessionMiddleware:
    return SessionMiddleware(example_app, settings, store=store)
