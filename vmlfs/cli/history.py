"""``vmlfs forget|protect|unprotect|gc|store upgrade|export|import``: delete backups, keep them, free the
space, convert the store, share an entry's backups as one file."""

from __future__ import annotations

import click

from vmlfs.app.bundle import export_backups, import_backups
from vmlfs.app.history import DEFAULT_GRACE_S, DEFAULT_REPACK_THRESHOLD, collect_garbage, forget, protect, upgrade
from vmlfs.cli import humanize
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, pass_context
from vmlfs.errors import CorruptData


@cli.command("forget")
@click.argument("refs", nargs=-1, required=True, metavar="NAME@TS...")
@pass_context
def forget_cmd(ctx: Context, refs: tuple[str, ...]) -> None:
    """Remove the named backups (their space is freed by 'vmlfs gc'). Protected ones are refused.

    Example: vmlfs forget higgs@20261101T120000Z higgs@20261102
    """
    done = forget(ctx.session(), list(refs))
    if not ctx.quiet:
        for ref in done.forgotten:
            click.echo(f"forgot {ref}")
        click.echo("run 'vmlfs gc' to free the space they alone used")


@cli.command("protect")
@click.argument("ref", metavar="NAME@TS")
@pass_context
def protect_cmd(ctx: Context, ref: str) -> None:
    """Never let forget or prune remove backup NAME@TS.

    Example: vmlfs protect higgs@20261122T101500Z
    """
    click.echo(f"protected {protect(ctx.session(), ref, True)}")


@cli.command("unprotect")
@click.argument("ref", metavar="NAME@TS")
@pass_context
def unprotect_cmd(ctx: Context, ref: str) -> None:
    """Lift the protection of backup NAME@TS.

    Example: vmlfs unprotect higgs@20261122T101500Z
    """
    click.echo(f"unprotected {protect(ctx.session(), ref, False)}")


@cli.command("gc")
@click.argument("name", required=False)
@click.option("--repack-threshold", type=float, default=DEFAULT_REPACK_THRESHOLD, show_default=True,
              help="Repack a layer whose file bytes are more than this fraction dead (1: never repack).")
@click.option("--grace", "grace_s", type=float, default=DEFAULT_GRACE_S, show_default=True, metavar="SECONDS",
              help="Delete garbage only this long after it was moved aside (and once no mount may read it).")
@pass_context
def gc_cmd(ctx: Context, name: str | None, repack_threshold: float, grace_s: float) -> None:
    """Free what no backup needs: unreferenced layers, trees and files; repack layers mostly dead (of NAME's backups).

    Example: vmlfs gc --repack-threshold 0.3
    """
    report = collect_garbage(ctx.session(), name, repack_threshold=repack_threshold, grace_s=grace_s,
                             say=lambda line: None if ctx.quiet else click.echo(line))
    moved = ", ".join(f"{n} {kind}" for kind, n in report.discarded.items() if n) or "nothing"
    click.echo(f"gc: moved aside {moved} ({humanize.size(report.discarded_bytes)});"
               f" repacked {report.repacked} layers ({humanize.size(report.repack_saved)} of dead file bytes);"
               f" deleted {report.purged} objects ({humanize.size(report.purged_bytes)} freed)"
               + (f"; {report.held} kept for the grace period or a mount" if report.held else "")
               + (f"; aborted {report.aborted} interrupted uploads" if report.aborted else ""))


@cli.group("store")
def store_group() -> None:
    """The store as a whole."""


@store_group.command("upgrade")
@click.option("--dry-run", is_flag=True, help="Say what would be converted; change nothing.")
@pass_context
def upgrade_cmd(ctx: Context, dry_run: bool) -> None:
    """Convert the store to the current format in place (crash-safe), then verify it.

    Example: vmlfs store upgrade --dry-run
    """
    report, verified = upgrade(ctx.session(), dry_run=dry_run, say=lambda line: None if ctx.quiet else click.echo(line))
    if report.already and not report.removed_dirs:
        click.echo("the store is already in the current format")
    elif dry_run:
        click.echo(f"would convert {report.backups} backups ({humanize.size(report.trees_before)} of manifests)")
    else:
        click.echo(f"converted {report.backups} backups: manifests {humanize.size(report.trees_before)}"
                   f" -> trees {humanize.size(report.trees_after)}; removed {report.removed_dirs} format-1 directories")
    if verified is not None:
        for problem in verified.problems:
            click.echo(f"DAMAGED {problem}")
        if not verified.ok:
            raise CorruptData(f"{len(verified.damaged_backups)} backups do not verify after the upgrade")
        click.echo(f"verified: {verified.backups} backups, {verified.files} files")


@cli.command("export")
@click.argument("refs", nargs=-1, required=True, metavar="NAME[@TS]...")
@click.argument("destination", metavar="FILE")
@pass_context
def export_cmd(ctx: Context, refs: tuple[str, ...], destination: str) -> None:
    """Write backups of one entry (NAME: all of them) and every object they need to FILE, one
    self-contained, checksummed tar that 'vmlfs import' reads into any store.

    Example: vmlfs export higgs@20261101 higgs@latest higgs.vmlfs
    """
    entry, stamps, objects = export_backups(ctx.session(), refs, destination)
    if not ctx.quiet:
        click.echo(f"exported {humanize.count(len(stamps), 'backup')} of {entry} ({humanize.count(objects, 'object')}) to {destination}")


@cli.command("import")
@click.argument("source", metavar="FILE")
@click.option("--as", "as_name", metavar="NAME", help="Add the entry under this name [the bundle's].")
@pass_context
def import_cmd(ctx: Context, source: str, as_name: str | None) -> None:
    """Check a bundle written by 'vmlfs export' whole, then add its entry, or the backups the entry
    does not have yet; a damaged bundle adds nothing, and importing twice adds nothing.

    Example: vmlfs import higgs.vmlfs --as higgs-from-anna
    """
    done = import_backups(ctx.session(), source, as_name, lambda line: click.echo(f"vmlfs: {line}", err=True))
    if not ctx.quiet:
        click.echo(f"{'created entry ' + done.entry + ', ' if done.created_entry else done.entry + ': '}"
                   f"added {humanize.count(len(done.added), 'backup')}, {len(done.already)} already there,"
                   f" stored {humanize.count(done.objects_stored, 'object')}")
