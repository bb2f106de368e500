"""``vmlfs mount|umount``: serve the store as a read-only FUSE tree.

Like sshfs, ``mount`` returns once the mount is live and keeps serving in the
background; ``-f`` keeps it in the foreground. Everything that can be checked
before mounting (store, format version, mountpoint, options) is checked in
the calling process, and the background process reports through a pipe
whether it got the mount live, so every failure reaches the user as one line.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Callable

import click

from vmlfs.app.session import Session
from vmlfs.app.vm import SessionVm
from vmlfs.archive.seekable import FrameCache
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, guest_options, libvirt_options, pass_context
from vmlfs.engine.throughput import serving_collections
from vmlfs.errors import Busy, InvalidRequest, NotFound, VmlfsError
from vmlfs.fs.control import Jobs
from vmlfs.fs.state import MountState

log = logging.getLogger(__name__)

SUPPORTED_OPTIONS = ("allow_other", "default_permissions")  # default_permissions is always on


def parse_options(values: tuple[str, ...]) -> bool:
    """``-o`` values (comma-separated, repeatable) -> whether allow_other was asked for."""
    chosen = {o.strip() for value in values for o in value.split(",") if o.strip()}
    unknown = sorted(chosen - set(SUPPORTED_OPTIONS))
    if unknown:
        raise InvalidRequest(f"unsupported mount option {', '.join(unknown)}", hint=f"supported: {', '.join(SUPPORTED_OPTIONS)}")
    return "allow_other" in chosen


def check_mountpoint(mountpoint: str, store_root: Path | None) -> str:
    """The mountpoint's real path if it is an empty directory that does not hold the (local) store."""
    path = os.path.realpath(mountpoint)
    try:  # not os.path.isdir: it answers False for a dead FUSE mount (ENOTCONN), whose message is below
        empty = stat.S_ISDIR(os.stat(path).st_mode) and not os.listdir(path)
    except FileNotFoundError:
        empty = False
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:  # a FUSE mount whose process died (SIGKILL, OOM) is still mounted
            raise InvalidRequest(
                f"{mountpoint} is still mounted, but the process serving it is gone (transport endpoint is not connected)",
                hint=f"unmount it first: vmlfs umount {mountpoint}  (or fusermount3 -u {mountpoint})",
            ) from None
        empty = False
    if not empty:
        raise InvalidRequest(f"mountpoint {mountpoint} is not an empty directory")
    if store_root is None:  # a store over SSH cannot live in this mount
        return path
    store = os.path.realpath(store_root)
    if store == path or store.startswith(path.rstrip(os.sep) + os.sep):
        # The mount would serve its own store: every access would call back into itself.
        raise InvalidRequest(f"the store {store} is inside the mountpoint {mountpoint}", hint="mount somewhere else")
    return path


def _daemon_mount(make_state: Callable[[], MountState], path: str, allow_other: bool, log_file: str | None) -> None:
    """Fork; the child opens the store (an SSH connection cannot cross a fork), mounts, and
    writes 'ok' (or the error) into a pipe the parent waits on."""
    from vmlfs.fs.fuse_adapter import serve

    reader, writer = os.pipe()
    if os.fork() > 0:
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            answer = pipe.read().decode("utf-8", "replace")
        if answer == "ok":
            return
        raise VmlfsError(answer or "the mount process ended before the mount was live", hint="try -f to see its log")
    os.close(reader)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file else devnull
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)

    def ready() -> None:
        os.write(writer, b"ok")
        os.close(writer)

    code = 0
    try:
        serve(make_state(), path, allow_other=allow_other, on_ready=ready)
    except BaseException as exc:  # noqa: BLE001  (the parent must hear about any failure)
        log.error("mount failed: %s", exc)
        try:
            os.write(writer, f"cannot mount {path}: {exc}".encode())
        except OSError:
            pass
        code = 1
    os._exit(code)


@cli.command()
@click.argument("mountpoint")
@click.option("--store", "store_path", metavar="PATH", help="Store directory (default: the global --store).")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground (Ctrl-C unmounts).")
@click.option("-o", "options", multiple=True, metavar="OPTION", help="Mount option: allow_other (comma-separated, repeatable).")
@click.option("--cache-size", type=click.IntRange(1, 1 << 16), default=64, show_default=True, metavar="MIB",
              help="Memory for decompressed frames (LRU).")
@click.option("--log-file", type=click.Path(dir_okay=False), help="Append the mount's log here (background mode logs nowhere otherwise).")
@guest_options
@libvirt_options
@pass_context
def mount(ctx: Context, mountpoint: str, store_path: str | None, foreground: bool, options: tuple[str, ...],
          cache_size: int, log_file: str | None, accept_new_host_key: bool, libvirt_uri: str, insecure: bool) -> None:
    """Mount every backup of the store, read-only, at MOUNTPOINT; control/ files take backups.

    Example: vmlfs mount ~/logbook && ls ~/logbook/entries/higgs/latest/home
    """
    allow_other = parse_options(options)
    checked = ctx.session(store_location=store_path, libvirt_uri=libvirt_uri, insecure=insecure)
    location = checked.store_location
    local = checked.local_store_path
    path = check_mountpoint(mountpoint, Path(local) if local else None)
    checked.check_libvirt_uri()  # refused now, not at the first vm/ access
    checked.store(create=False)  # missing, unreachable or newer stores: one line, before forking
    checked.close()

    def make_state() -> MountState:
        # The mount's own session, opened after the fork (an SSH connection cannot cross it); libvirt is
        # reached lazily: a mount without libvirtd works, only vm/ and provisioning answer EIO.
        session = Session(location, guest_keys=replace(checked.guest_keys, accept_new=accept_new_host_key),
                          store_keys=checked.store_keys, libvirt_uri=libvirt_uri, insecure=insecure,
                          frame_cache=FrameCache(cache_size << 20), shared_store=True)
        state = MountState(session.store(create=False), Jobs(session, SessionVm(session)))
        serving_collections()  # what lives now lives as long as the mount
        return state

    if foreground:
        from vmlfs.fs.fuse_adapter import serve

        if log_file:
            logging.getLogger().addHandler(logging.FileHandler(log_file))
        try:
            serve(make_state(), path, allow_other=allow_other)
        except RuntimeError as exc:  # pyfuse3.init: no /dev/fuse, permission denied, ...
            raise VmlfsError(f"cannot mount {path}: {exc}") from None
        return
    _daemon_mount(make_state, path, allow_other, log_file)


def _is_vmlfs_mount(path: str) -> bool:
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2:
                where = fields[1].encode().decode("unicode_escape")  # \040 for spaces
                if where == path and fields[2] == "fuse.vmlfs":
                    return True
    return False


@cli.command()
@click.argument("mountpoint")
def umount(mountpoint: str) -> None:
    """Unmount a vmlfs mount (the same as fusermount3 -u MOUNTPOINT).

    Example: vmlfs umount ~/logbook
    """
    path = os.path.realpath(mountpoint)
    if not _is_vmlfs_mount(path):
        raise NotFound(f"{mountpoint} is not a vmlfs mount")
    tool = ["fusermount3", "-u", path] if shutil.which("fusermount3") else ["umount", path]
    done = subprocess.run(tool, capture_output=True, text=True)
    if done.returncode != 0:
        raise Busy(f"cannot unmount {mountpoint}: {done.stderr.strip() or 'failed'}", hint="close files and shells using it")
