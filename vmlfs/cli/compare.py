"""Commands that look across backups: ``diff`` (what changed between two), ``versions`` (of one path over
all), ``find`` (paths matching a pattern)."""

from __future__ import annotations

import click

from vmlfs.app.changes import diff_backups
from vmlfs.app.find import find_paths
from vmlfs.app.versions import file_versions
from vmlfs.cli import humanize, json_out
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, pass_context
from vmlfs.engine import tree_diff


@cli.command()
@click.argument("old", metavar="NAME@A")
@click.argument("new", metavar="NAME@B")
@click.argument("path", default="")
@json_out.option
@pass_context
def diff(ctx: Context, old: str, new: str, path: str, as_json: bool) -> None:
    """What changed from backup A to backup B (below PATH): + added, - removed, M modified content,
    T changed type, U metadata only; read from the two trees, no layer is opened.

    Example: vmlfs diff higgs@20261101 higgs@latest analysis
    """
    counts: dict[str, int] = {}
    docs = []
    with diff_backups(ctx.session(), old, new, path) as (compared, changes):
        for change in changes:
            counts[change.kind] = counts.get(change.kind, 0) + 1
            if as_json:
                docs.append({"kind": change.kind, "path": json_out.path(change.path),
                             "old": change.old and json_out.node(change.old), "new": change.new and json_out.node(change.new)})
            else:
                click.echo(tree_diff.change_line(change))
    if as_json:
        (a, ta), (b, tb) = compared.old, compared.new
        json_out.emit({"old": f"{a}@{ta}", "new": f"{b}@{tb}", "changes": docs,
                       "counts": {kind: counts.get(kind, 0) for kind in tree_diff.KINDS}})
    elif not ctx.quiet:
        (a, ta), (b, tb) = compared.old, compared.new
        click.echo(f"{a}@{ta} -> {b}@{tb}: {tree_diff.summary(counts)}", err=True)


@cli.command()
@click.argument("name")
@click.argument("path")
@json_out.option
@pass_context
def versions(ctx: Context, name: str, path: str, as_json: bool) -> None:
    """Each distinct version of PATH in NAME's backups, oldest first: the backup it first appeared in,
    size, mtime and sha256 prefix (d: a directory, l: a symlink and its target).

    Example: vmlfs versions higgs analysis/fit.C
    """
    found = file_versions(ctx.session(), name, path)
    if as_json:
        return json_out.emit({"entry": name, "path": path, "damaged": found.damaged,
                              "versions": [json_out.node(v.node, timestamp=v.ts) for v in found.versions]})
    for v in found.versions:
        n = v.node
        what = (n.sha256.hex()[:12] if n.is_file and n.sha256 else "d" if n.is_dir
                else "l -> " + humanize.name(n.target or b"") if n.is_symlink else "-")
        click.echo(f"{v.ts}  {n.size:>12}  {humanize.mtime(n.mtime_ns)}  {what}")
    for problem in found.damaged:
        click.echo(f"vmlfs: warning: backup {problem}", err=True)


@cli.command()
@click.argument("name")
@click.argument("pattern")
@click.option("--backups", "which", multiple=True, metavar="all|latest|TS",
              help="Search these backups (repeatable; a unique timestamp prefix will do) [all].")
@json_out.option
@pass_context
def find(ctx: Context, name: str, pattern: str, which: tuple[str, ...], as_json: bool) -> None:
    """Paths matching a shell pattern in NAME's backups: against names ('*.root'), or, with a '/',
    against whole paths ('analysis/*/fit.C'); one line per match: the backup and the path.

    Example: vmlfs find higgs '*.root' --backups latest
    """
    count, backups, docs = 0, set(), []
    for match in find_paths(ctx.session(), name, pattern, which, lambda problem: click.echo(
            f"vmlfs: warning: backup {problem}", err=True)):
        count += 1
        backups.add(match.ts)
        if as_json:
            docs.append(json_out.node(match.node, timestamp=match.ts, path=json_out.path(match.path)))
            continue
        shown = "/".join(humanize.name(part) for part in match.path)
        click.echo(f"{match.ts}  {shown}{'/' if match.node.is_dir else ''}")
    if as_json:
        json_out.emit(docs)
    elif not ctx.quiet:
        click.echo(f"{humanize.count(count, 'match', 'matches')} in {humanize.count(len(backups), 'backup')}", err=True)
