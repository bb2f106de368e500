"""``vmlfs backup|list|ls|restore|verify``: take, inspect, restore and check backups."""

from __future__ import annotations

import os
import time

import click

from vmlfs.backends.factory import open_guest, restore_to_ssh
from vmlfs.cernvm.detect import check_release
from vmlfs.cli import humanize
from vmlfs.cli.main import cli
from vmlfs.cli.options import (
    Context,
    libvirt_options,
    pass_context,
    resolve_backup,
    split_ref,
)
from vmlfs.cli.progress import BackupProgress, byte_bar
from vmlfs.engine.backup import run_backup
from vmlfs.engine.restore import restore_tree
from vmlfs.engine.verify import verify_store
from vmlfs.errors import ConnectionFailed, CorruptData, HostKeyRejected, InvalidRequest


@cli.command()
@click.argument("name")
@click.option("--kind", type=click.Choice(["full", "incremental", "differential"]), help="Default: full for the first backup, incremental after.")
@click.option("--checksum", is_flag=True, help="Re-read and hash every file instead of trusting size and times.")
@click.option("--env-file", type=click.Path(dir_okay=False, exists=True), help="Local guest: take env.txt from this file.")
@click.option("--accept-new-host-key", is_flag=True, help="SSH guest: trust an unknown host key and add it to known_hosts (a changed key is always refused).")
@click.option("--retries", type=click.IntRange(0, 100), default=0, show_default=True, help="SSH guest or store: reconnect and start over this many times if a connection drops.")
@click.option("--vm-snapshot", is_flag=True, help="Also take a libvirt snapshot (vmlfs-<TS>) of the entry's domain.")
@click.option("--consistent", is_flag=True, help="Hold the entry's domain still during the backup: freeze its file systems through the guest agent, or pause it (local guests only).")
@click.option("--strict-release", is_flag=True, help="Refuse if the guest's CernVM release differs from the entry's.")
@libvirt_options
@pass_context
def backup(ctx: Context, name: str, kind: str | None, checksum: bool, env_file: str | None,
           accept_new_host_key: bool, retries: int, vm_snapshot: bool, consistent: bool, strict_release: bool,
           libvirt_uri: str, insecure: bool) -> None:
    """Take a backup of entry NAME."""
    store = ctx.store()
    cfg = store.load_entry(name)
    around = None
    if vm_snapshot or consistent:
        if not cfg.domain:
            raise InvalidRequest(f"entry {name!r} names no libvirt domain", hint=f"vmlfs entry add {name} --domain DOMAIN ...")
        from vmlfs.hypervisor import backup_hook

        # A paused guest cannot answer SSH: SSH guests are frozen through the guest agent or not at all.
        method = "freeze" if cfg.guest.startswith("ssh://") else "auto"
        around = backup_hook(libvirt_uri, cfg.domain, insecure=insecure, snapshot=vm_snapshot,
                             consistency=method if consistent else None, description=f"vmlfs backup of entry {name}")
    for attempt in range(retries + 1):
        progress = BackupProgress(ctx.show_progress)
        guest = None
        try:
            guest = open_guest(cfg, env_file=env_file, accept_new_host_key=accept_new_host_key)
            if strict_release:
                check_release(cfg.release, guest.release(), strict=True)
            meta = run_backup(store, cfg, guest, kind=kind, checksum=checksum, progress=progress, around=around)
            break
        except ConnectionFailed as exc:
            if isinstance(exc, HostKeyRejected) or attempt == retries:
                raise
            click.echo(f"vmlfs: {exc}; nothing was committed, retrying ({attempt + 1}/{retries})", err=True)
            time.sleep(min(2 ** attempt, 30))
            store = ctx.reopen_store()  # the dropped connection may have been the store's
        finally:
            progress.close()
            if guest is not None:
                guest.close()
    s = meta.stats
    for warning in meta.warnings:
        click.echo(f"vmlfs: warning: {warning}", err=True)
    if not ctx.quiet:
        click.echo(
            f"{name}@{meta.timestamp}: {meta.kind}"
            + (f" on {meta.base}" if meta.base else "")
            + f", {s['files']} files ({humanize.size(s['bytes'])}), packed {s['packed_files']} ({humanize.size(s['packed_bytes'])}),"
            f" stored {humanize.size(meta.layer['size'])} in {humanize.duration(meta.duration_s)}"
            + (f", VM snapshot {meta.vm_snapshot}" if meta.vm_snapshot else "")
        )


def release_check(recorded: str | None, url: str, strict: bool, accept_new_host_key: bool) -> None:
    """Compare a backup's release with the SSH guest's before restoring: warn, or refuse when ``strict``."""
    if not recorded:
        return
    from vmlfs.backends.ssh_guest import SshGuest
    from vmlfs.backends.ssh_runner import SshConnection, SshOptions
    from vmlfs.backends.ssh_url import parse_ssh_url

    target = parse_ssh_url(url)
    guest = SshGuest(SshConnection(target, SshOptions(accept_new_host_key=accept_new_host_key)), "/", target.display)
    try:
        warning = check_release(recorded, guest.release(), strict=strict)
    finally:
        guest.close()
    if warning:
        click.echo(f"vmlfs: warning: {warning}", err=True)


@cli.command("list")
@click.argument("name")
@pass_context
def list_backups(ctx: Context, name: str) -> None:
    """One line per backup of NAME: time, kind, base, files, stored size, duration."""
    for record in ctx.store().backups(name):
        m = record.meta
        if m is None:
            click.echo(f"{record.timestamp}  INVALID: {record.error}")
            continue
        click.echo(
            f"{m.timestamp}  {m.kind:<12} {m.base or '-':<16} {m.stats['files']:>8} files"
            f"  {humanize.size(m.layer['size']):>10}  {humanize.duration(m.duration_s):>9}"
            + (f"  vm:{m.vm_snapshot}" if m.vm_snapshot else "")
        )


@cli.command("ls")
@click.argument("ref", metavar="NAME[@TS]")
@click.argument("path", default="")
@pass_context
def ls(ctx: Context, ref: str, path: str) -> None:
    """List a directory of a backup (the newest unless @TS; a unique prefix of TS will do)."""
    store = ctx.store()
    name, ts = resolve_backup(store, ref)
    manifest = store.open_manifest(name, ts)
    try:
        node = manifest.lookup(os.fsencode(path))
        for child in manifest.children(node.id) if node.is_dir else [node]:
            shown = humanize.name(child.name) or "."
            if child.is_symlink:
                shown += " -> " + humanize.name(child.target or b"")
            owner = f"{child.uname or child.uid}/{child.gname or child.gid}"
            click.echo(f"{humanize.mode(child.type, child.mode)} {owner:<16} {child.size:>12} {humanize.mtime(child.mtime_ns)} {shown}")
    finally:
        manifest.close()


@cli.command()
@click.argument("ref", metavar="NAME[@TS]")
@click.argument("target", type=click.Path(file_okay=False))
@click.argument("paths", nargs=-1)
@click.option("--overwrite", is_flag=True, help="Replace files that already exist in TARGET.")
@click.option("--accept-new-host-key", is_flag=True, help="TARGET over SSH: trust an unknown host key (a changed key is always refused).")
@click.option("--strict-release", is_flag=True, help="TARGET over SSH: refuse if the guest's CernVM release differs from the backup's.")
@pass_context
def restore(ctx: Context, ref: str, target: str, paths: tuple[str, ...], overwrite: bool, accept_new_host_key: bool,
            strict_release: bool) -> None:
    """Restore a backup (or PATHS inside it) into the directory TARGET (or ssh://[user@]host[:port]/path)."""
    store = ctx.store()
    name, ts = resolve_backup(store, ref)
    manifest = store.open_manifest(name, ts)
    bar = byte_bar(ctx.show_progress, "restored")
    open_layer = lambda layer_ts: store.open_layer(name, layer_ts)  # noqa: E731
    try:
        if target.startswith("ssh://"):
            recorded = store.meta(name, ts).release
            release_check(recorded, target, strict_release, accept_new_host_key)
            report = restore_to_ssh(manifest, open_layer, target, [os.fsencode(p) for p in paths],
                                    overwrite=overwrite, on_bytes=bar.update, accept_new_host_key=accept_new_host_key)
        else:
            report = restore_tree(manifest, open_layer, target, [os.fsencode(p) for p in paths],
                                  overwrite=overwrite, on_bytes=bar.update)
    finally:
        bar.close()
        manifest.close()
    if not ctx.quiet:
        click.echo(
            f"restored {name}@{ts} into {target}: {report.files} files, {report.dirs} directories,"
            f" {report.symlinks} symlinks, {report.hardlinks} hardlinks, {humanize.size(report.bytes)}"
        )
    if report.damaged:
        for line in report.damaged:
            click.echo(f"vmlfs: damaged, not restored: {line}", err=True)
        raise CorruptData(f"{len(report.damaged)} damaged files were not restored", hint=f"run 'vmlfs verify {name}@{ts}'")


@cli.command()
@click.argument("ref", metavar="[NAME[@TS]]", required=False)
@pass_context
def verify(ctx: Context, ref: str | None) -> None:
    """Re-read and check every layer, manifest and file hash (of one backup, one entry, or the store)."""
    store = ctx.store(create=False)
    if ref is None:
        targets = [(e, r.timestamp) for e in store.entry_names() for r in store.backups(e)]
    elif "@" in ref:
        targets = [resolve_backup(store, ref)]
    else:
        name, _ = split_ref(ref)
        targets = [(name, r.timestamp) for r in store.backups(name)]
    bar = byte_bar(ctx.show_progress, "verified")
    try:
        report = verify_store(store, targets, on_bytes=bar.update)
    finally:
        bar.close()
    for problem in report.problems:
        click.echo(f"DAMAGED {problem}")
    if not report.ok:
        raise CorruptData(
            f"{len(report.damaged_backups)} of {report.backups} backups are damaged: {', '.join(report.damaged_backups)}"
        )
    if not ctx.quiet:
        click.echo(f"ok: {report.backups} backups, {report.files} files, {humanize.size(report.bytes)} checked")
