"""`sessctl stats`: counts by state, lifetime kind and expiry."""

from __future__ import annotations

import click

from ..types import json_option, pass_app


STATS_SAMPLE = 20_000  # live sessions above which the lifetime kinds come from a sample


@click.command()
@click.option(
    "--exact",
    is_flag=True,
    help=f"Read every live session for the lifetime kinds (default: above {STATS_SAMPLE:,} live "
    "sessions they are estimated from a random sample; counts and histogram are always exact).",
)
@json_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "openmetrics"]),
    help="text (the default), json (as --json), or openmetrics: Prometheus/OpenMetrics text for "
    "node_exporter's textfile collector.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write to FILE instead of stdout, whole or not at all (a temporary file beside it, then "
    "renamed), as the textfile collector needs.",
)
@pass_app
def stats(app, exact, as_json, fmt, output):
    """Count sessions by state, lifetime kind and expiry.

    Counts total, active and expired sessions, and those expiring within
    1 hour, 1 day and 7 days.
    Lifetime kinds are counted over active sessions, read without verifying
    signatures (no secret key needed); absolute_with_idle counts the
    deadlines that also carry an idle limit. Human output adds an expiry
    histogram. Above 20,000 live sessions the kinds are estimated from a
    random sample ("sampled" in JSON) unless --exact; the counts, windows
    and histogram are exact range counts.
    --format openmetrics adds the age of the oldest expired row and, when a
    purge by this user's sessctl is known, its last run.

    \b
    Example:
      sessctl stats
      sessctl stats --json | jq .expiring
      sessctl stats --format openmetrics -o /var/lib/node_exporter/textfile/sessctl.prom
    """
    from sessctl.reports import stats as compute

    from ..app import database_label
    from ..render import stats_report

    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json and --format {fmt} exclude each other; pick one")
    fmt = "json" if as_json else (fmt or "text")
    if output is not None and fmt == "text":
        raise click.UsageError("--output writes --format json or openmetrics")
    store = app.store()
    app.journal_hint(store)
    report = compute(store, sample=None if exact else STATS_SAMPLE, django=app.django)
    if fmt == "openmetrics":
        from .. import lastrun
        from ..metrics import openmetrics

        database, table = database_label(app.settings.database_url), app.settings.table
        text = openmetrics(report, database=database, table=table, last_purge=lastrun.last(database, table))
    elif fmt == "json":
        import json

        text = json.dumps(report) + "\n"
    else:
        stats_report(report)
        return
    if output is None:
        click.echo(text, nl=False)
        return
    from ..metrics import write_atomically

    try:
        write_atomically(output, text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output!r}: {exc.strerror or exc}") from None
