"""`sessctl stats`: counts by state, lifetime kind and expiry."""

from __future__ import annotations

import click

from ..types import json_option, pass_app


STATS_SAMPLE = 20_000  # live sessions above which kinds and histogram come from a sample


@click.command()
@click.option(
    "--exact",
    is_flag=True,
    help=f"Read every live session for the kind counts and histogram (default: above {STATS_SAMPLE:,} "
    "live sessions they are estimated from a random sample).",
)
@json_option
@pass_app
def stats(app, exact, as_json):
    """Count sessions by state, lifetime kind and expiry.

    Counts total, active and expired sessions, and those expiring within
    1 hour, 1 day and 7 days.
    Lifetime kinds are counted over active sessions, read without verifying
    signatures (no secret key needed); absolute_with_idle counts the
    deadlines that also carry an idle limit. Human output adds an expiry
    histogram. Above 20,000 live sessions the kinds and histogram are
    estimated from a random sample ("sampled" in JSON) unless --exact.

    \b
    Example:
      sessctl stats
      sessctl stats --json | jq .expiring
    """
    from sessctl.reports import stats as compute

    from ..render import json_object, stats_report

    report = compute(app.store(), sample=None if exact else STATS_SAMPLE)
    if as_json:
        json_object(report)
    else:
        stats_report(report)
