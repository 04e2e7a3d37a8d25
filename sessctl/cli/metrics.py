"""`stats --format openmetrics`: the counts as OpenMetrics text, for Prometheus and for
node_exporter's textfile collector (which reads the same lines as the older 0.0.4 format).

Every family is a gauge (counts go down as well as up); no sample carries a timestamp (the
textfile collector refuses them); every sample is labelled with the database (password
redacted) and the table, so several apps' files can sit in one collector folder.
"""

from __future__ import annotations

from typing import Any


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def openmetrics(report: dict[str, Any], *, database: str, table: str, last_purge: dict | None) -> str:
    """The stats ``report`` (as ``stats --json`` prints it) as OpenMetrics text, ending in ``# EOF``."""
    base = f'database="{_escape(database)}",table="{_escape(table)}"'
    out: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            extra = f",{labels}" if labels else ""
            out.append(f"{name}{{{base}{extra}}} {_number(value)}")

    family("sessctl_session_rows", "Session rows in the table, live and expired.", [("", report["total"])])
    family("sessctl_sessions", "Session rows by state: active (not yet expired) or expired (awaiting purge).",
           [('state="active"', report["active"]), ('state="expired"', report["expired"])])
    estimated = " (estimated from a sample above 20,000 live sessions)" if report.get("sampled") else ""
    family("sessctl_active_sessions", f"Active sessions by lifetime kind{estimated}.",
           [(f'lifetime="{_escape(kind)}"', n) for kind, n in report["by_kind"].items()])
    family("sessctl_sessions_expiring", "Active sessions that expire within the window.",
           [(f'within="{span}"', n) for span, n in report["expiring"].items()])
    family("sessctl_oldest_expired_session_age_seconds",
           "Seconds since the oldest expired row expired (0 when none): grows while purge does not run.",
           [("", report.get("oldest_expired_age_seconds") or 0)])
    if last_purge:
        family("sessctl_purge_last_run_timestamp_seconds", "When the last purge run by sessctl here ended (Unix time).",
               [("", last_purge["finished"])])
        family("sessctl_purge_last_run_deleted", "Rows the last purge deleted.", [("", last_purge["deleted"])])
        family("sessctl_purge_last_run_complete",
               "1 if the last purge deleted every expired row, 0 if it stopped early (--max-seconds).",
               [("", 1 if last_purge["complete"] else 0)])
    out.append("# EOF")
    return "\n".join(out) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` as a whole or not at all: a temporary file in the same folder
    (named so that the collector's ``*.prom`` glob skips it), flushed, then renamed over."""
    import contextlib
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0o22)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a file written with `>` would be (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
