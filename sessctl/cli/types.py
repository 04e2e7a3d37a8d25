"""Click parameter types: input is validated here, so bad usage exits 2 before any work."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
# 100 years: further than any cookie or database datetime needs to reach (the policy's own bound).
MAX_DURATION = 100 * 365 * 86400
_KEY_RE = re.compile(r"[a-z0-9]{1,40}")

# The options and decorators several commands share.
pass_app = click.pass_obj
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (ISO-8601 UTC timestamps).")
no_verify_option = click.option(
    "--no-verify",
    is_flag=True,
    help="Show the data even if its signature does not verify (labelled unverified; never trust it).",
)


def parse_duration(text: str) -> int:
    """``3600``, ``90m``, ``2h``, ``7d``, ``1h30m`` -> seconds; ValueError on anything else."""
    value = text.strip().lower()
    if re.fullmatch(r"[+-]?\d+", value):
        seconds = int(value)
    elif value and _PART.sub("", value) == "":
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    else:
        raise ValueError(f"{text!r} is not a duration; use seconds (3600) or units like 90m, 2h, 7d, 1h30m")
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is too long; the most is 100 years ({MAX_DURATION // 86400}d)")
    return seconds


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def looks_like_duration(text: str) -> bool:
    """The form of a duration (``3600``, ``-5``, ``90m``, ``1h30m``), whether or not its value is allowed."""
    return re.fullmatch(r"[+-]?\d+|(?:\d+[smhdw])+", text.strip().lower()) is not None


class IdleDuration(Duration):
    """``--idle`` given bare (True: DURATION is an idle timeout) or with a value (an idle limit, in seconds)."""

    name = "idle limit"

    def convert(self, value, param, ctx):
        if value is True or value == "":
            return True  # the bare flag (click passes its flag_value, "")
        return super().convert(value, param, ctx)


class SessionKey(click.ParamType):
    """A session key; completes from the database named by the global options."""

    name = "key"

    def convert(self, value, param, ctx):
        key = value.strip()
        if not _KEY_RE.fullmatch(key):
            # Keys are what Django and sessctl make: lowercase letters and digits. Anything else is
            # refused rather than looked up, so a case-insensitive collation (MariaDB's default)
            # can never match KEY to key.
            shown = repr(value) if len(value) <= 50 else repr(value[:47]) + "..."
            self.fail(f"{shown} is not a session key (1 to 40 lowercase letters and digits)", param, ctx)
        return key

    def shell_complete(self, ctx, param, incomplete):
        # Runs on every TAB: it must never print, raise or hang for long.
        try:
            from click.shell_completion import CompletionItem

            return [CompletionItem(k) for k in complete_keys(ctx.find_root().params, incomplete)]
        except Exception:
            return []


class FileName(click.ParamType):
    """A file's name (need not exist yet): no NUL, not a folder. click.Path stats it and crashes on a NUL."""

    name = "path"

    def convert(self, value, param, ctx):
        import os

        if "\x00" in value or not value:
            self.fail(f"{value!r} is not a file name", param, ctx)
        if os.path.isdir(value):
            self.fail(f"{value!r} is a folder, not a file", param, ctx)
        return value

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(incomplete, type="file")]  # as click.Path: the shell completes files


class TableName(click.ParamType):
    """A plain SQL identifier, as the table setting takes (checked here, so a bad one is bad usage)."""

    name = "name"

    def convert(self, value, param, ctx):
        from sessctl.checks import TABLE_RE

        if not TABLE_RE.fullmatch(value):
            shown = repr(value) if len(value) <= 50 else repr(value[:47]) + "..."
            self.fail(f"{shown} is not a plain SQL identifier (letters, digits and _, at most 63)", param, ctx)
        return value


class FiniteSeconds(click.ParamType):
    """A positive, finite number of seconds, at most ``maximum`` (``nan`` and ``inf`` are not a time limit)."""

    name = "seconds"

    def __init__(self, maximum: float | None = None) -> None:
        self.maximum = maximum

    def convert(self, value, param, ctx):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        top = MAX_DURATION if self.maximum is None else self.maximum
        if not 0 < seconds <= top:  # also false for NaN
            limit = "" if self.maximum is None else f" (at most {self.maximum:g})"
            self.fail(f"{value!r} is not a positive, finite number of seconds{limit}", param, ctx)
        return seconds


@contextlib.contextmanager
def completion_store(params: dict) -> Iterator[Any]:
    """A store on the database the global options name, for shell completion (no secret needed)."""
    import os
    import warnings

    from sessctl.config import Settings
    from sessctl.db import make_engine
    from sessctl.store import SessionStore

    # Completion never needs the secret, so a bad secret setting must not stop it.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SESSCTL_SECRET_KEY")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        settings = Settings.load(
            config=params.get("config"), environ=environ, database_url=params.get("db"), table=params.get("table")
        )
        store = SessionStore(settings, engine=make_engine(settings.database_url, timeout=1))
        try:
            store.check()  # never creates a missing SQLite file
            yield store
        finally:
            store.close()


def complete_keys(params: dict, incomplete: str, limit: int = 100) -> list[str]:
    with completion_store(params) as store:
        return store.keys_with_prefix(incomplete, limit)
