"""The example app as users deploy it, for real servers (gunicorn, uvicorn).

Settings come from the environment (``SESSCTL_DB``, ``SESSCTL_TABLE``, ``SESSCTL_SECRET_KEY``;
``LC_TIMEOUT`` sets the store's time bound). As the demo does, the store is made and its table
created at import time: under ``gunicorn --preload`` that is the master process, before it
forks its workers, so every worker starts with whatever the store holds.

Routes (GET, answers JSON):
  /login?user=U   a new session key (cycle_key) holding user U
  /whoami         {"user": ..., "n": ...} of this request's session
  /bump           n += 1 in the session, answers the new n
  /thread         (ASGI) a piece of unrelated work on asyncio's default threads
  /pid            the worker's process id
"""

from __future__ import annotations

import asyncio
import json
import os

from lifecycle import handle
from sessctl import SessionMiddleware, SessionStore, Settings
from sessctl.asgi import SessionMiddleware as ASGISessionMiddleware

settings = Settings.load()
if os.environ.get("LC_TIMEOUT"):
    settings = settings.replace(timeout=float(os.environ["LC_TIMEOUT"]))
store = SessionStore(settings)
if os.environ.get("LC_CREATE_TABLE", "1") == "1":
    store.create_table()  # uses the store's connections before any fork


def wsgi_view(environ, start_response):
    from sessctl.middleware import get_session

    status, payload = handle(get_session(environ), environ.get("PATH_INFO", "/"), environ.get("QUERY_STRING", ""))
    body = json.dumps(payload).encode()
    start_response(f"{status} {'OK' if status == 200 else 'Not Found'}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


application = SessionMiddleware(wsgi_view, store=store)


async def asgi_view(scope, receive, send):
    if scope["type"] != "http":
        return
    path, query = scope["path"], scope.get("query_string", b"").decode()
    if path == "/thread":
        value = await asyncio.to_thread(sum, [1, 2])
        status, payload = 200, {"thread": value}
    else:
        status, payload = handle(scope["session"], path, query)
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


asgi_app = ASGISessionMiddleware(asgi_view, store=store)
