"""A real browser against the demo app: Debian's chromium, headless, on 127.0.0.1.

Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe``
(JSON messages ending in NUL; it reads fd 3 and writes fd 4), so neither
WebDriver nor a websocket client is needed. Each start on the same
``--user-data-dir`` is one browser session; ``Browser.close`` quits the way a
person does, so the profile keeps persistent cookies and drops session ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sessctl.cli import cli
from sessctl.cli.demo.server import Demo, running

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # Only ever 127.0.0.1: no proxy, and no name resolves.
    "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def demo() -> Iterator[Demo]:
    with running() as d:
        yield d


def _high(fd: int) -> int:
    """The same pipe end on a descriptor >= 10, clear of the 3 and 4 the child needs."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Chromium:
    """One run of headless chromium with one tab, on the profile ``profile``."""

    def __init__(self, path: str, profile: Path, log: Path) -> None:
        child_in, self._out = map(_high, os.pipe())
        self._in, child_out = map(_high, os.pipe())
        self._log = log
        # bash, not sh: dash cannot redirect descriptors above 9.
        script = f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        self._fds = (self._in, self._out)
        try:
            with log.open("a") as err:
                self.proc = subprocess.Popen(
                    ["bash", "-c", script, path, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                     "about:blank"],
                    pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                )
        except BaseException:
            for fd in self._fds:
                os.close(fd)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []
        try:
            page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self.tab = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            self.send("Page.enable", tab=True)
            self.send("Page.setLifecycleEventsEnabled", tab=True, enabled=True)
        except BaseException:
            self.close()
            raise

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer in time; its log: {self._log}")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise EOFError(f"chromium quit; its log ends with:\n{self._log.read_text()[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, *, tab: bool = False, timeout: float = 15, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if tab:
            message["sessionId"] = self.tab
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for_load(self, loader: str | None = None, timeout: float = 15) -> None:
        """Wait until the tab's next document (``loader``, or the next one to commit) has loaded."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.pop(0) if self.events else self._receive(deadline)
            method, params = event.get("method"), event.get("params", {})
            if loader is None and method == "Page.frameNavigated" and "parentId" not in params["frame"]:
                loader = params["frame"]["loaderId"]
            elif method == "Page.lifecycleEvent" and params["name"] == "load" and params["loaderId"] == loader:
                return

    def evaluate(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", tab=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def open(self, url: str) -> str:
        """Load ``url``; the page's status line."""
        self.events.clear()
        navigation = self.send("Page.navigate", tab=True, url=url)
        if navigation.get("errorText"):
            raise RuntimeError(f"chromium could not open {url}: {navigation['errorText']}")
        self.wait_for_load(navigation["loaderId"])
        return self.status()

    def status(self) -> str:
        return self.evaluate("document.getElementById('status').textContent")

    def log_in(self, url: str, name: str, life: str) -> str:
        """Open the login page (it sets the test cookie), fill the form in and click "Log in"."""
        self.open(url + "login")
        self.events.clear()
        self.evaluate(
            f"document.querySelector('#login [name=username]').value = {json.dumps(name)};"
            f"document.getElementById({json.dumps(life)}).checked = true;"
            "document.querySelector('#login button').click();"
        )
        self.wait_for_load()
        return self.status()

    def session_cookie(self) -> dict[str, Any] | None:
        cookies = self.send("Storage.getCookies")["cookies"]
        return next((c for c in cookies if c["name"] == "sessionid"), None)

    def close(self) -> None:
        """Quit as a person does (the profile saves what it keeps); kill only if that fails."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(OSError, EOFError, TimeoutError):
                    self.send("Browser.close", timeout=10)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            fds, self._fds = self._fds, ()  # close once: a number closed twice may be someone else's by then
            for fd in fds:
                os.close(fd)


@pytest.fixture
def browser(chromium, demo, tmp_path):
    """``browser()`` starts chromium on this test's own profile; every run is closed before the demo app stops."""
    profile = tmp_path / "profile"
    runs: list[Chromium] = []

    def start() -> Chromium:
        run = Chromium(chromium, profile, tmp_path / "chromium.log")
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def test_remember_me_survives_a_browser_restart(browser, demo):
    first = browser()
    assert first.log_in(demo.url, "alice", "remember").startswith("You're logged in as alice; this session ends 20")
    cookie = first.session_cookie()
    assert cookie is not None and not cookie["session"]
    assert 29 * 86400 < cookie["expires"] - time.time() <= 30 * 86400
    first.close()

    second = browser()
    assert second.open(demo.url).startswith("Logged in as alice; this session ends 20")
    assert second.session_cookie()["value"] == cookie["value"]


def test_public_computer_session_ends_with_the_browser(browser, demo):
    first = browser()
    assert first.log_in(demo.url, "bob", "public") == (
        "You're logged in as bob; this session ends when you close the browser."
    )
    cookie = first.session_cookie()
    assert cookie is not None and cookie["session"]
    assert first.open(demo.url).startswith("Logged in as bob")
    first.close()

    second = browser()
    assert second.session_cookie() is None
    assert second.open(demo.url) == "Not logged in."
    # The browser forgot the key; the row lives on until the server-side cap, for purge to remove.
    assert demo.store.load_row(cookie["value"]) is not None


def test_set_life_from_the_command_line_ends_the_session(browser, demo):
    run = browser()
    assert run.log_in(demo.url, "carol", "default").startswith("You're logged in as carol")
    key = run.session_cookie()["value"]

    result = CliRunner().invoke(cli, [*demo.cli_args, "set-life", key, "2s"], prog_name="sessctl")
    assert result.exit_code == 0, result.output
    time.sleep(3)

    cookie = run.session_cookie()
    assert cookie is not None and cookie["value"] == key  # the browser still holds its 14-day cookie...
    assert run.open(demo.url) == "Not logged in."  # ...but the server says the session is over
    assert run.session_cookie() is None  # and told the browser to drop it
    assert demo.store.load_row(key) is None
