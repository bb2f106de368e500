"""Commands that compare backups: ``diff`` (what changed between two)."""

from __future__ import annotations

import click

from vmlfs.app.changes import diff_backups
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, pass_context
from vmlfs.engine import tree_diff


@cli.command()
@click.argument("old", metavar="NAME@A")
@click.argument("new", metavar="NAME@B")
@click.argument("path", default="")
@pass_context
def diff(ctx: Context, old: str, new: str, path: str) -> None:
    """What changed from backup A to backup B (below PATH): + added, - removed, M modified content,
    T changed type, U metadata only; read from the two trees, no layer is opened.

    Example: vmlfs diff higgs@20261101 higgs@latest analysis
    """
    counts: dict[str, int] = {}
    with diff_backups(ctx.session(), old, new, path) as (compared, changes):
        for change in changes:
            counts[change.kind] = counts.get(change.kind, 0) + 1
            click.echo(tree_diff.change_line(change))
    if not ctx.quiet:
        (a, ta), (b, tb) = compared.old, compared.new
        click.echo(f"{a}@{ta} -> {b}@{tb}: {tree_diff.summary(counts)}", err=True)
