"""The `sessctl` command: inspect and maintain a session table.

Only click is imported at start-up; SQLAlchemy and rich are loaded by the
commands that need them, so `sessctl --help` and shell completion stay fast.
"""

from __future__ import annotations

import os

from .root import cli

__all__ = ["cli", "main"]


def main() -> None:
    if os.environ.get("_SESSCTL_COMPLETE", "").startswith("bash"):
        from .commands.completion import register

        register()
    cli(prog_name="sessctl")
