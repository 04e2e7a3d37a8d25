"""Tables of users and of one user's sessions: plain columns for scripts, rich on a terminal."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from .render import kind_label, printable, relative, terminal


def _when(text: str | None, now: datetime) -> str:
    return "-" if not text else relative(datetime.fromisoformat(text), now)


def _device(item: dict[str, Any], width: int = 48) -> str:
    from sessctl.devices import describe

    device = item.get("device")
    if not device:
        return "-"
    return printable(describe(device.get("ip"), device.get("user_agent"), width))


def users_table(items: list[dict[str, Any]], now: datetime) -> int:
    console = terminal()
    if console is None:
        for i, item in enumerate(items):
            if i == 0:
                click.echo(f"{'USER':<24}  {'SESSIONS':>8}  LAST ACTIVITY")
            click.echo(f"{printable(item['user']):<24}  {item['sessions']:>8}  {_when(item['last_activity'], now)}")
        return len(items)
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("User", no_wrap=True)
    table.add_column("Sessions", justify="right")
    table.add_column("Last activity", justify="right")
    for item in items:
        table.add_row(printable(item["user"]), f"{item['sessions']:,}", _when(item["last_activity"], now))
    if table.row_count:
        console.print(table)
    return table.row_count


def user_sessions_table(items: list[dict[str, Any]], now: datetime) -> int:
    console = terminal()
    if console is None:
        for i, item in enumerate(items):
            if i == 0:
                click.echo(f"{'KEY':<32}  {'EXPIRES':<14}  {'LIFETIME':<13}  {'LAST ACTIVITY':<14}  DEVICE")
            exp = datetime.fromisoformat(item["expire_date"])
            click.echo(
                f"{printable(item['key']):<32}  {relative(exp, now):<14}  {kind_label(item['lifetime']):<13}  "
                f"{_when(item['last_activity'], now):<14}  {_device(item, 400)}"
            )
        return len(items)
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("Key", "Expires", "Lifetime", "Last activity", "Device"):
        table.add_column(name, no_wrap=name != "Device")
    for item in items:
        exp = datetime.fromisoformat(item["expire_date"])
        table.add_row(printable(item["key"]), relative(exp, now), kind_label(item["lifetime"]),
                      _when(item["last_activity"], now), _device(item))
    if table.row_count:
        console.print(table)
    return table.row_count
