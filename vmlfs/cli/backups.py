"""``vmlfs backup|list|ls|restore|verify``: take, inspect, restore and check backups."""

from __future__ import annotations

import click

from vmlfs.app.backups import BackupRequest, take_backup
from vmlfs.app.cvmfs import check_cache_target, guest_root_url, restore_cvmfs_cache
from vmlfs.app.inspect import backups_of, directory_of, verify_backups
from vmlfs.app.restore import restore_backup
from vmlfs.cli import humanize, json_out
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, guest_options, libvirt_options, pass_context
from vmlfs.cli.progress import BackupProgress, byte_bar
from vmlfs.errors import CorruptData, InvalidRequest


def _say(line: str) -> None:
    click.echo(f"vmlfs: {line}", err=True)


@cli.command()
@click.argument("name")
@click.option("--kind", type=click.Choice(["full", "incremental", "differential"]), help="Default: full for the first backup, incremental after.")
@click.option("--checksum", is_flag=True, help="Re-read and hash every file instead of trusting size and times.")
@click.option("--env-file", type=click.Path(dir_okay=False, exists=True), help="Local guest: take env.txt from this file.")
@guest_options
@click.option("--retries", type=click.IntRange(0, 100), help="SSH guest or store: reconnect and start over this many times if a connection drops [the entry's default, 0].")
@click.option("--vm-snapshot/--no-vm-snapshot", default=None, help="Also take a libvirt snapshot (vmlfs-<TS>) of the entry's domain [the entry's default].")
@click.option("--consistent/--no-consistent", default=None, help="Hold the entry's domain still during the backup: freeze its file systems through the guest agent, or pause it (local guests only) [the entry's default].")
@click.option("--strict-release", is_flag=True, help="Refuse if the guest's CernVM release differs from the entry's.")
@click.option("--with-cvmfs-cache/--without-cvmfs-cache", "cvmfs_cache", default=None, help="Also capture the guest's CernVM-FS cache; objects any earlier backup stored are not stored again [the entry's default].")
@click.option("--cvmfs-cache-base", metavar="PATH", help="The guest's CernVM-FS cache base [the entry's, else CVMFS_CACHE_BASE of the guest's /etc/cvmfs, else /mnt/.rw/cvmfs-cache].")
@libvirt_options
@pass_context
def backup(ctx: Context, name: str, kind: str | None, checksum: bool, env_file: str | None,
           accept_new_host_key: bool, retries: int | None, vm_snapshot: bool | None, consistent: bool | None,
           strict_release: bool, cvmfs_cache: bool | None, cvmfs_cache_base: str | None, libvirt_uri: str,
           insecure: bool) -> None:
    """Take a backup of entry NAME.

    Example: vmlfs backup higgs --kind differential
    """
    session = ctx.session(accept_new_host_key=accept_new_host_key, libvirt_uri=libvirt_uri, insecure=insecure)
    request = BackupRequest(kind=kind, checksum=checksum, env_file=env_file, vm_snapshot=vm_snapshot,
                            consistent=consistent, retries=retries, strict_release=strict_release,
                            cvmfs_cache=cvmfs_cache, cvmfs_cache_base=cvmfs_cache_base)
    progress = BackupProgress(ctx.show_progress)
    try:
        meta = take_backup(session, name, request, progress=progress, on_retry=_say,
                           on_prune=lambda done: _say(f"pruned by the entry's keep rules: forgot {len(done.forgotten)} backups"
                                                      + (f", gc freed {humanize.size(done.gc.purged_bytes)}" if done.gc else "")))
    finally:
        progress.close()
    s = meta.stats
    for warning in meta.warnings:
        _say(f"warning: {warning}")
    if not ctx.quiet:
        click.echo(
            f"{name}@{meta.timestamp}: {meta.kind}"
            + (f" on {meta.base}" if meta.base else "")
            + f", {s['files']} files ({humanize.size(s['bytes'])}), packed {s['packed_files']} ({humanize.size(s['packed_bytes'])}),"
            f" stored {humanize.size(meta.layer['size'])} in {humanize.duration(meta.duration_s)}"
            + (f", VM snapshot {meta.vm_snapshot}" if meta.vm_snapshot else "")
        )
        if meta.cvmfs is not None:
            c = meta.cvmfs
            click.echo(f"CernVM-FS cache {c['base']}: {c['objects']} objects ({humanize.size(c['bytes'])}),"
                       f" {c['stored_objects']} new ({humanize.size(c['stored_bytes'])}), stored {humanize.size(c['layer']['size'])}")


@cli.command("list")
@click.argument("name")
@json_out.option
@pass_context
def list_backups(ctx: Context, name: str, as_json: bool) -> None:
    """One line per backup of NAME: time, kind, base, files, stored size, duration.

    Example: vmlfs list higgs
    """
    records = backups_of(ctx.session(), name)
    if as_json:
        return json_out.emit([json_out.record(record) for record in records])
    for record in records:
        m = record.meta
        if m is None:
            click.echo(f"{record.timestamp}  INVALID: {record.error}")
            continue
        click.echo(
            f"{m.timestamp}  {m.kind:<12} {m.base or '-':<16} {m.stats['files']:>8} files"
            f"  {humanize.size(m.layer['size']):>10}  {humanize.duration(m.duration_s):>9}"
            + (f"  vm:{m.vm_snapshot}" if m.vm_snapshot else "")
            + (f"  cvmfs:{m.cvmfs['objects']}" if m.cvmfs else "")
            + ("  protected" if record.protected else "")
            + (f"  TIMES? {anomaly}" if (anomaly := record.anomaly()) else "")
        )


@cli.command("ls")
@click.argument("ref", metavar="NAME[@TS]")
@click.argument("path", default="")
@json_out.option
@pass_context
def ls(ctx: Context, ref: str, path: str, as_json: bool) -> None:
    """List a directory of a backup (the newest unless @TS; a unique prefix of TS will do).

    Example: vmlfs ls higgs@20261122 analysis
    """
    name, ts, nodes = directory_of(ctx.session(), ref, path)
    if as_json:
        return json_out.emit({"entry": name, "timestamp": ts, "path": path,
                              "entries": [json_out.node(child, name=json_out.text(child.name)) for child in nodes]})
    for child in nodes:
        shown = humanize.name(child.name) or "."
        if child.is_symlink:
            shown += " -> " + humanize.name(child.target or b"")
        owner = f"{child.uname or child.uid}/{child.gname or child.gid}"
        click.echo(f"{humanize.mode(child.type, child.mode)} {owner:<16} {child.size:>12} {humanize.mtime(child.mtime_ns)} {shown}")


@cli.command()
@click.argument("ref", metavar="NAME[@TS]")
@click.argument("target", type=click.Path(file_okay=False))
@click.argument("paths", nargs=-1)
@click.option("--overwrite", is_flag=True, help="Replace files that already exist in TARGET.")
@guest_options
@click.option("--strict-release", is_flag=True, help="TARGET over SSH: refuse if the guest's CernVM release differs from the backup's.")
@click.option("--with-cvmfs-cache", is_flag=True, help="TARGET over SSH as root: also put the backup's CernVM-FS cache into the guest's cache base (stop autofs, unpack, owner cvmfs, reload).")
@click.option("--cvmfs-cache-into", metavar="LOCATION", help="Put the backup's CernVM-FS cache into this directory (it becomes the cache base: LOCATION/shared/...) or ssh://root@host[:port][/base].")
@pass_context
def restore(ctx: Context, ref: str, target: str, paths: tuple[str, ...], overwrite: bool, accept_new_host_key: bool,
            strict_release: bool, with_cvmfs_cache: bool, cvmfs_cache_into: str | None) -> None:
    """Restore a backup (or PATHS inside it) into the directory TARGET (or ssh://[user@]host[:port]/path).

    Example: vmlfs restore higgs@latest /tmp/old-home analysis/fit.C
    """
    if with_cvmfs_cache and cvmfs_cache_into is None:
        if not target.startswith("ssh://"):
            raise InvalidRequest("--with-cvmfs-cache puts the cache into an SSH guest; for a directory use --cvmfs-cache-into DIR")
        cvmfs_cache_into = guest_root_url(target)
    if cvmfs_cache_into is not None:
        check_cache_target(cvmfs_cache_into)  # before the home is written, not after
    session = ctx.session(accept_new_host_key=accept_new_host_key)
    bar = byte_bar(ctx.show_progress, "restored")
    try:
        done = restore_backup(session, ref, target, paths, overwrite=overwrite, strict_release=strict_release,
                              on_bytes=bar.update)
        cache = (restore_cvmfs_cache(session, f"{done.entry}@{done.ts}", cvmfs_cache_into, on_bytes=bar.update)
                 if cvmfs_cache_into is not None else None)
    finally:
        bar.close()
    report = done.report
    if done.warning:
        _say(f"warning: {done.warning}")
    if not ctx.quiet:
        click.echo(
            f"restored {done.entry}@{done.ts} into {target}: {report.files} files, {report.dirs} directories,"
            f" {report.symlinks} symlinks, {report.hardlinks} hardlinks, {humanize.size(report.bytes)}"
        )
    damaged = list(report.damaged)
    if cache is not None:
        for note in cache.notes:
            _say(f"warning: {note}")
        if not ctx.quiet:
            click.echo(f"restored the CernVM-FS cache of {done.entry}@{done.ts} into {cache.where}:"
                       f" {cache.report.files} files, {humanize.size(cache.report.bytes)}")
        damaged += [f"CernVM-FS cache: {line}" for line in cache.report.damaged]
    if damaged:
        for line in damaged:
            _say(f"damaged, not restored: {line}")
        raise CorruptData(f"{len(damaged)} damaged files were not restored", hint=f"run 'vmlfs verify {done.entry}@{done.ts}'")


@cli.command("verify")
@click.argument("ref", metavar="[NAME[@TS]]", required=False)
@json_out.option
@pass_context
def verify_cmd(ctx: Context, ref: str | None, as_json: bool) -> None:
    """Re-read and check every layer, manifest and file hash (of one backup, one entry, or the store).

    Example: vmlfs verify higgs
    """
    bar = byte_bar(ctx.show_progress and not as_json, "verified")
    try:
        report, unlisted = verify_backups(ctx.session(), ref, on_bytes=bar.update)
    finally:
        bar.close()
    if as_json:  # printed before the exit code says whether anything is damaged
        json_out.emit({"ok": report.ok and not unlisted, "backups": report.backups, "files": report.files,
                       "bytes": report.bytes, "problems": unlisted + report.problems,
                       "damaged_backups": report.damaged_backups})
    for problem in [] if as_json else unlisted + report.problems:
        click.echo(f"DAMAGED {problem}")
    if not report.ok:
        raise CorruptData(
            f"{len(report.damaged_backups)} of {report.backups} backups are damaged: {', '.join(report.damaged_backups)}"
        )
    if unlisted:
        raise CorruptData(f"{len(unlisted)} entries are damaged")
    if not ctx.quiet and not as_json:
        click.echo(f"ok: {report.backups} backups, {report.files} files, {humanize.size(report.bytes)} checked")
