"""Output: JSON for scripts, rich tables and panels on a terminal, plain lines otherwise.

Session data is never read as rich markup: the console is built with
``markup=False`` and data goes in as ``Text``. Importing this module costs
nothing; rich is imported only when a terminal is drawn on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import click

from . import safejson

from sessctl.policy import Lifetime, format_seconds
from sessctl.reports import UNREADABLE, iso

# -- values -------------------------------------------------------------------


def iso_from_timestamp(ts: int | None) -> str | None:
    try:
        return None if ts is None else iso(datetime.fromtimestamp(ts, timezone.utc))
    except (OverflowError, OSError, ValueError):
        return None


def utc_text(moment: datetime) -> str:
    return f"{ymd_hms(moment)} UTC"


def ymd_hms(moment: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, the year always four digits (strftime gives year 1 as "1")."""
    return moment.astimezone(timezone.utc).isoformat(sep=" ", timespec="seconds")[:19]


def relative(moment: datetime, now: datetime) -> str:
    seconds = (moment - now).total_seconds()
    return f"in {format_seconds(seconds)}" if seconds > 0 else f"{format_seconds(-seconds)} ago"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def describe(lifetime: dict[str, Any]) -> str:
    kind = lifetime["kind"]
    if kind == UNREADABLE:
        return "unknown (the data cannot be decoded)"
    deadline = lifetime.get("deadline")
    seconds = lifetime.get("seconds", lifetime.get("idle_seconds"))  # an absolute deadline may carry an idle limit
    return Lifetime(kind, seconds=seconds, deadline=datetime.fromisoformat(deadline) if deadline else None).describe()


def data_text(data: Any, encoding: str | None = None) -> str:
    """Session data as indented JSON for a person: readable non-ASCII text, but every character a
    terminal could act on (control and format characters, ANSI/C1 escapes, bidi overrides), and any
    the output's ``encoding`` cannot hold, written as a JSON escape (still the same JSON)."""
    text = json.dumps(data, indent=2, ensure_ascii=False)

    def fits(chunk: str) -> bool:
        if encoding is None:
            return True
        try:
            chunk.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            return False
        return True

    if text.replace("\n", "").isprintable() and fits(text):
        return text
    bad = {c for c in set(text) if c != "\n" and not (c.isprintable() and fits(c))}
    if not bad:
        return text
    import re

    pattern = re.compile("[" + "".join(re.escape(c) for c in sorted(bad)) + "]")
    return pattern.sub(lambda m: json.dumps(m.group())[1:-1], text)


def kind_label(lifetime: dict[str, Any]) -> str:
    """The lifetime column of ``list``: the kind, or ``absolute+idle`` when a deadline carries an idle limit."""
    kind = lifetime["kind"]
    if kind == "absolute" and lifetime.get("idle_seconds") is not None:
        return "absolute+idle"
    return kind


def printable(text: str) -> str:
    """``text`` with control characters (ANSI escapes, CR, BEL...) shown as escapes, never sent to a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- JSON ---------------------------------------------------------------------


def json_object(obj: Any) -> None:
    """One JSON object on one line: a cron job's ``>> log`` stays JSON Lines; ``jq .`` pretty-prints."""
    click.echo(safejson.dumps(obj))


def json_lines(items: Iterable[Any]) -> int:
    """Stream one JSON object per line (JSON Lines), without holding the items; returns the count."""
    count = 0
    for item in items:
        click.echo(safejson.dumps(item))
        count += 1
    return count


def json_array(items: Iterable[Any]) -> int:
    """Stream a JSON array, one element per line, without holding the items; returns the count."""
    count = 0
    for item in items:
        click.echo(("[\n" if count == 0 else ",\n") + safejson.dumps(item), nl=False)
        count += 1
    click.echo("\n]" if count else "[]")
    return count


# -- human output ----------------------------------------------------------


def _may_be_terminal(stream, force_var: str) -> bool:
    """Cheap check before importing rich: the stream is a TTY, or rich's environment forces one."""
    import os

    if os.environ.get(force_var) == "1" or os.environ.get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal():
    """A rich console on stdout if it is a terminal, else None (plain text, and rich is not imported)."""
    import sys

    if not _may_be_terminal(sys.stdout, "TTY_COMPATIBLE"):
        return None
    from rich.console import Console

    console = Console(markup=False, highlight=False, emoji=False)
    return console if console.is_terminal else None


def session_table(items: Iterator[dict[str, Any]], now: datetime) -> int:
    console = terminal()
    if console is None:
        count = 0
        for item in items:
            if count == 0:
                click.echo(f"{'KEY':<32}  {'EXPIRES (UTC)':<19}  {'RELATIVE':<14}  {'LIFETIME':<13}  SIZE")
            exp = datetime.fromisoformat(item["expire_date"])
            click.echo(
                f"{printable(item['key']):<32}  {ymd_hms(exp)}  {relative(exp, now):<14}  "
                f"{kind_label(item['lifetime']):<13}  {item['size']}"
            )
            count += 1
        return count
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("Key", "Expires (UTC)", "Relative", "Lifetime", "Size"):
        table.add_column(name, justify="right" if name in ("Relative", "Size") else "left", no_wrap=True)
    for item in items:
        exp = datetime.fromisoformat(item["expire_date"])
        style = "dim" if item["expired"] else ""
        table.add_row(
            Text(printable(item["key"]), style=style),
            ymd_hms(exp),
            Text(relative(exp, now), style="red" if item["expired"] else ""),
            kind_label(item["lifetime"]),
            f"{item['size']:,}",
        )
    if table.row_count:
        console.print(table)
    return table.row_count


def _status(info: dict[str, Any]) -> str:
    return "EXPIRED" if info["expired"] else "active"


def _fields(info: dict[str, Any], now: datetime | None) -> list[tuple[str, str]]:
    fields = []
    if "key" in info:
        exp = datetime.fromisoformat(info["expire_date"])
        fields += [
            ("key", printable(info["key"])),
            ("status", _status(info)),
            ("expires", f"{utc_text(exp)} ({relative(exp, now)})"),
        ]
        if info.get("time_zone"):
            fields.append(("stored as", f"{info['stored_expire_date']} {info['time_zone']} wall time (USE_TZ = False)"))
    fields.append(("lifetime", describe(info["lifetime"])))
    fields.append(("size", plural(info["size"], "byte")))
    if "user" in info:
        fields.append(("user", "-" if info["user"] is None else printable(str(info["user"]))))
    if info.get("last_activity") and now is not None:
        seen = datetime.fromisoformat(info["last_activity"])
        fields.append(("last seen", f"{utc_text(seen)} ({relative(seen, now)})"))
    device = info.get("device")
    if device:
        fields.append(("device", printable(" ".join(str(v) for v in (device.get("ip"), device.get("user_agent")) if v))))
    if info.get("signed_at"):
        fields.append(("signed", utc_text(datetime.fromisoformat(info["signed_at"]))))
    if info["data"] is None:
        verified = "-"
    elif info["verified"]:
        verified = "yes"
    else:
        verified = "NO: the signature was not verified; do not trust this data"
    fields.append(("verified", verified))
    return fields


def session_panel(info: dict[str, Any], now: datetime | None) -> None:
    """One session (``show``) or one decoded value (``decode``)."""
    fields = _fields(info, now)
    data = info["data"]
    console = terminal()
    import sys

    encoding = getattr(sys.stdout, "encoding", None) if console is None else None
    body = "(not shown)" if data is None else data_text(data, encoding)
    if console is None:
        for name, value in fields:
            click.echo(f"{name + ':':<10} {value}")
        click.echo(f"{'data:':<10} {body}" if data is None else f"data:\n{body}")
        return
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in fields:
        alarm = (name == "status" and value == "EXPIRED") or (name == "verified" and value.startswith("NO"))
        grid.add_row(name, Text(value, style="bold red" if alarm else ""))
    trusted = data is not None and info["verified"] and not info.get("expired")
    title = Text(f"session {printable(info['key'])}" if "key" in info else "session data")
    console.print(Panel(Group(grid, Text(""), Text(body)), title=title, title_align="left",
                        border_style="green" if trusted else "red", expand=False))


@contextlib.contextmanager
def purge_progress(app, store, cutoff: datetime):
    """Yield an ``on_batch`` callback that advances a progress bar, only when a person watches stderr."""
    import sys

    if app.quiet or not _may_be_terminal(sys.stderr, "TTY_INTERACTIVE"):
        yield None
        return
    from rich.console import Console

    err = Console(stderr=True, markup=False, highlight=False)
    if not err.is_interactive:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = store.count_expired(cutoff)
    columns = (TextColumn("purging expired sessions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_interactive) as progress:
        task = progress.add_task("purge", total=total)
        yield lambda n: progress.advance(task, n)


def _kind_rows(report: dict[str, Any]) -> list[tuple[str, int]]:
    rows = []
    for kind, n in report["by_kind"].items():
        rows.append((kind, n))
        if kind == "absolute":
            rows.append(("  + idle limit", report.get("absolute_with_idle", 0)))
    return rows


def stats_report(report: dict[str, Any]) -> None:
    estimated = f"active, estimated from {report['sampled']:,}" if report.get("sampled") else "active"
    sections = [
        ("sessions", [(name, report[name]) for name in ("total", "active", "expired")]),
        (f"lifetime ({estimated})", _kind_rows(report)),
        ("expiring within", [(span, n) for span, n in report["expiring"].items()]),
    ]
    histogram = [(b["label"], b["count"]) for b in report["histogram"]]
    peak = max((n for _, n in histogram), default=0) or 1
    space = _space_rows(report.get("space") or {})
    console = terminal()
    if console is None:
        for title, rows in sections:
            click.echo(f"{title}:")
            for name, n in rows:
                click.echo(f"  {name:<15} {n}")
        click.echo("expiry histogram (active):")
        for label, n in histogram:
            click.echo(f"  {label:<15} {n:<8} {'#' * round(30 * n / peak)}".rstrip())
        if space:
            click.echo("space:")
            for name, value in space:
                click.echo(f"  {name:<15} {value}")
        return
    from rich.columns import Columns
    from rich.table import Table

    tables = []
    for title, rows in sections:
        table = Table(title=title, show_header=False, title_justify="left", min_width=20)
        table.add_column()
        table.add_column(justify="right")
        for name, n in rows:
            table.add_row(name, f"{n:,}")
        tables.append(table)
    console.print(Columns(tables))
    hist = Table(title="expiry of active sessions", show_header=False, title_justify="left", box=None)
    hist.add_column()
    hist.add_column(justify="right")
    hist.add_column(style="cyan")
    for label, n in histogram:
        hist.add_row(label, f"{n:,}", "█" * round(40 * n / peak))
    console.print(hist)
    if space:
        table = Table(title="space", show_header=False, title_justify="left", box=None)
        table.add_column()
        table.add_column()
        for name, value in space:
            table.add_row(name, str(value))
        console.print(table)


def _space_rows(space: dict[str, Any]) -> list[tuple[str, str]]:
    """The table's size and its dead/free space, in words (``stats --json`` has the bytes)."""
    rows = []
    for name, label in (("file_bytes", "file"), ("table_bytes", "table"), ("heap_bytes", "heap"),
                        ("data_bytes", "data"), ("index_bytes", "indexes"), ("free_bytes", "free/dead"),
                        ("wal_bytes", "WAL")):
        if space.get(name) is not None:
            rows.append((label, _size(space[name])))
    if space.get("dead_rows") is not None:
        rows.append(("dead rows", f"{space['dead_rows']:,}"))
    if space.get("auto_vacuum") is not None:
        rows.append(("auto_vacuum", space["auto_vacuum"]))
    if space.get("reclaim"):
        rows.append(("to reclaim", space["reclaim"]))
    return rows


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)
