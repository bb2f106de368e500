"""``vmlfs prune``: remove the backups an entry's keep rules do not keep, after showing which."""

from __future__ import annotations

import sys
from typing import Any, Callable, TypeVar

import click

from vmlfs.app.history import DEFAULT_GRACE_S, DEFAULT_REPACK_THRESHOLD
from vmlfs.app.prune import backups, plan_prune, prune
from vmlfs.cli import humanize
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, pass_context
from vmlfs.engine.retention import Policy
from vmlfs.errors import InvalidRequest

F = TypeVar("F", bound=Callable[..., Any])
KEEP_COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_PERIOD = {"hourly": "hours", "daily": "days", "weekly": "ISO weeks", "monthly": "months", "yearly": "years"}


def keep_rule_options(func: F) -> F:
    """The keep rules, shared by ``prune`` and ``entry add/edit`` (which store them on the entry)."""
    options = [click.option(f"--keep-{unit}", f"keep_{unit}", type=click.IntRange(0, 1 << 20), metavar="N",
                            help="Keep the N newest backups." if unit == "last" else
                            f"Keep the newest backup of each of the last N {_PERIOD[unit]} that have one (UTC).")
               for unit in KEEP_COUNTS]
    options += [
        click.option("--keep-within", metavar="DURATION", help="Keep every backup younger than DURATION (30d, 12h, 2w), "
                     "measured from the entry's newest backup, not from now."),
        click.option("--dyadic", is_flag=True, default=None, help="Thin out as the Dyadic Snapshot Scheduler (dss) does."),
        click.option("--unit-interval", metavar="DURATION", help="--dyadic: the unit interval (dss's default: 4d)."),
        click.option("--num-intervals", type=click.IntRange(1, 30), metavar="N",
                     help="--dyadic: how many intervals (at most 2^N - 1 backups remain; dss's default: 5)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def policy_from(options: dict[str, Any]) -> Policy | None:
    """The Policy the keep-rule options describe, or None if none was given."""
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    if not given:
        return None
    return Policy(**given)


def rule_values(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the keep-rule options out of a command's keyword arguments."""
    keys = [f"keep_{u}" for u in KEEP_COUNTS] + ["keep_within", "dyadic", "unit_interval", "num_intervals"]
    return {k: kwargs.pop(k) for k in keys}


@cli.command("prune")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "everything", is_flag=True, help="Every entry of the store (each by its own stored policy).")
@keep_rule_options
@click.option("--dry-run", is_flag=True, help="Print what would be kept and removed, and what gc would free; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask (needed when not on a terminal).")
@click.option("--no-gc", is_flag=True, help="Only forget; leave freeing the space to a later 'vmlfs gc'.")
@click.option("--repack-threshold", type=float, default=DEFAULT_REPACK_THRESHOLD, show_default=True,
              help="gc: repack a layer whose file bytes are more than this fraction dead.")
@click.option("--grace", "grace_s", type=float, default=DEFAULT_GRACE_S, show_default=True, metavar="SECONDS",
              help="gc: delete garbage only this long after it was moved aside.")
@pass_context
def prune_cmd(ctx: Context, names: tuple[str, ...], everything: bool, dry_run: bool, yes: bool, no_gc: bool,
              repack_threshold: float, grace_s: float, **rules: Any) -> None:
    """Remove the backups the keep rules (given here, or stored on each entry) do not keep; the newest,
    protected and running backups always stay; rules are ORed and grouped per entry.

    Example: vmlfs prune higgs --keep-daily 7 --keep-weekly 4 --keep-within 30d --dry-run
    """
    session = ctx.session()
    if everything == bool(names):
        raise InvalidRequest("name the entries to prune, or give --all (not both)")
    entries = session.store().entry_names() if everything else list(names)
    plan = plan_prune(session, entries, policy_from(rule_values(rules)))
    click.echo(plan.report(), nl=False)
    doomed = plan.doomed
    click.echo(plan.summary(humanize.size(plan.frees)))
    if dry_run or not doomed:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidRequest("prune asks before removing backups", hint="pass --yes, or --dry-run to look first")
        click.confirm(f"remove {backups(len(doomed))}?", abort=True)
    done = prune(session, plan, gc=not no_gc, repack_threshold=repack_threshold, grace_s=grace_s)
    click.echo(f"forgot {backups(len(done.forgotten))}")
    if done.gc is not None:
        g = done.gc
        click.echo(f"gc: repacked {g.repacked} layers, deleted {g.purged} objects ({humanize.size(g.purged_bytes)} freed)"
                   + (f"; {g.held} kept for the grace period or a mount" if g.held else ""))
