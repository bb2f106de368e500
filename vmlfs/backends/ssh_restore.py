"""Restore a backup into a directory on an SSH guest.

This side walks the manifest exactly as the local restore does (names
validated one component at a time, only directory nodes descended, so a node
below a symlink is unreachable) and streams operations to the guest agent's
``restore`` mode, which applies them with the same dir-fd / O_NOFOLLOW /
O_EXCL rules as :mod:`vmlfs.engine.restore` and validates every name again.
File bytes are read from the layers here, hashed while they stream, and a
file whose bytes do not match the manifest is deleted on the guest by its
trailer. One remote process, one stream: no round trip per file.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Callable

from vmlfs import names
from vmlfs.archive.manifest import Manifest, Node
from vmlfs.archive.seekable import SeekableReader
from vmlfs.backends.ssh_guest import agent_argv, check_exit
from vmlfs.backends.ssh_runner import RemoteProcess, Runner
from vmlfs.engine.content import Layers, file_chunks
from vmlfs.engine.restore import RestoreReport
from vmlfs.engine.tree_check import LinkGroups
from vmlfs.errors import CorruptData, GuestError, UnsafePath

META = struct.Struct("<IIIqI")
FILE = struct.Struct("<IIIqQQI")
LINK = struct.Struct("<IIqII")
HARD = struct.Struct("<QI")
NO_META = 0xFFFFFFFF

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """The guest agent ended early (it refused something); its exit status says why."""


class _Sender:
    def __init__(self, manifest: Manifest, open_layer: Callable[[str], SeekableReader], proc: RemoteProcess,
                 on_bytes: Callable[[int], None]) -> None:
        self.manifest, self.proc, self.on_bytes = manifest, proc, on_bytes
        self.layers = Layers(open_layer)
        self.sent_groups: set[int] = set()
        self.groups = LinkGroups()
        self.damaged: list[str] = []  # refused here, before anything was sent

    def attributes(self, node: Node) -> None:
        """The extended attributes of the 'D' or 'F' operation that follows, if it has any."""
        if node.xattrs is not None:
            self.proc.write(b"X" + struct.pack("<I", len(node.xattrs)) + node.xattrs)

    def enter(self, name: bytes, node: Node | None) -> None:
        if node is None:
            self.proc.write(b"D" + META.pack(NO_META, 0, 0, 0, len(name)) + name)
        else:
            self.attributes(node)
            self.proc.write(b"D" + META.pack(node.mode, node.uid, node.gid, node.mtime_ns, len(name)) + name)

    def leave(self) -> None:
        self.proc.write(b"U")

    def node(self, parts: tuple[bytes, ...], node: Node) -> None:
        """The node at ``parts`` (() is the target itself), and for a directory everything below it,
        depth first without recursion (a tree may be deeper than Python's recursion limit)."""
        if not node.is_dir:
            if not parts:
                raise UnsafePath("only a directory can be restored as the target itself")
            self.leaf(parts, node)
            return
        self.enter(names.component(parts[-1]) if parts else b"", node)
        stack = [(parts, iter(self.manifest.children(node.id)))]
        while stack:
            here, kids = stack[-1]
            child = next(kids, None)
            if child is None:
                stack.pop()
                self.leave()
            elif child.is_dir:
                self.enter(names.component(child.name), child)
                stack.append((here + (child.name,), iter(self.manifest.children(child.id))))
            else:
                self.leaf(here + (child.name,), child)

    def leaf(self, path: tuple[bytes, ...], node: Node) -> None:
        name = names.component(path[-1])
        problem = self.groups.disagreement(node)
        if problem:
            self.damaged.append(f"{b'/'.join(path).decode('utf-8', 'replace')}: {problem}")
            return
        if node.is_symlink:
            target = node.target or b""
            self.proc.write(b"L" + LINK.pack(node.uid, node.gid, node.mtime_ns, len(name), len(target)) + name + target)
        elif node.link_group is not None and node.link_group in self.sent_groups:
            self.proc.write(b"H" + HARD.pack(node.link_group, len(name)) + name)
        else:
            self.file(name, node)

    def file(self, name: bytes, node: Node) -> None:
        """The header, exactly ``size`` bytes, then K (whole and verified) or B (void it, with the reason)."""
        group = node.link_group or 0
        self.attributes(node)
        self.proc.write(b"F" + FILE.pack(node.mode, node.uid, node.gid, node.mtime_ns, node.size, group, len(name)) + name)
        sent = 0
        try:
            for chunk in file_chunks(self.layers, node):
                if self.proc.finished:
                    raise _Stopped
                self.proc.write(chunk)
                sent += len(chunk)
                self.on_bytes(len(chunk))
        except CorruptData as exc:
            while sent < node.size:  # the promised length; the trailer voids the file
                pad = min(1 << 20, node.size - sent)
                self.proc.write(bytes(pad))
                sent += pad
            reason = str(exc).encode()
            self.proc.write(b"B" + struct.pack("<I", len(reason)) + reason)
            return
        self.proc.write(b"K")
        if node.link_group is not None:
            self.sent_groups.add(node.link_group)

    def close(self) -> None:
        self.layers.close()


def restore_to_guest(manifest: Manifest, open_layer: Callable[[str], SeekableReader], runner: Runner, root: str,
                     paths: list[bytes] | None = None, *, overwrite: bool = False,
                     on_bytes: Callable[[int], None] = lambda n: None) -> RestoreReport:
    """Write the backup (or the subtrees at ``paths``) below ``root`` on the guest; like restore_tree."""
    plan = []
    for raw in paths or [b""]:
        parts = names.relative_path(raw)
        plan.append((parts, manifest.lookup(parts)))
    proc = runner.start(agent_argv("restore", root, *(["--overwrite"] if overwrite else [])))
    sender = _Sender(manifest, open_layer, proc, on_bytes)
    try:
        try:
            for parts, node in plan:
                for part in parts[:-1]:
                    sender.enter(part, None)
                sender.node(parts, node)
                for _ in parts[:-1]:
                    sender.leave()
            proc.write(b"E")
        except _Stopped:
            pass
        proc.close_stdin()
        out = b""
        while chunk := proc.read():
            out += chunk
        check_exit(proc, f"restoring into {runner.description}")
    finally:
        sender.close()
        if proc.exit_status is None:
            proc.terminate()
    try:
        result = json.loads(out)
        report = RestoreReport(result["files"], result["dirs"], result["symlinks"], result["hardlinks"], result["bytes"],
                               list(result["damaged"]) + sender.damaged, [str(w) for w in result["warnings"]])
    except (ValueError, KeyError, TypeError) as exc:
        raise GuestError(f"restoring into {runner.description}: malformed report from the guest ({exc})") from None
    for line in report.warnings:
        log.warning("%s", line)
    return report
