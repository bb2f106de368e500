"""``entries/<e>/control/prune-preview`` and ``control/prune``: the entry's stored keep rules, from a file manager.

``cat prune-preview`` shows what ``vmlfs prune NAME --dry-run`` shows (one
line per backup with its reasons, and what gc would free), computed at each
open from the store, never cached: the file's size is that of the last
preview shown (it is served with direct I/O, so a reader always gets the
whole text). ``touch prune`` applies the rules as a job, the same use case
as ``vmlfs prune NAME --yes``, with its outcome in ``status``.
"""

from __future__ import annotations

import stat

from vmlfs.errors import InvalidRequest, VmlfsError
from vmlfs.fs import layout
from vmlfs.fs.context import MountContext
from vmlfs.fs.control import Job
from vmlfs.fs.files import ControlFile, VirtualNode
from vmlfs.fs.protocol import NEVER, Attrs, ContentHandle


class PrunePreviewFile(VirtualNode):
    """The dry run of the entry's stored keep rules, made at open (a worker thread)."""

    def __init__(self, ctx: MountContext, entry: str) -> None:
        super().__init__(ctx, ("prune-preview", entry))
        self.entry = entry
        self.shown = b""

    def attrs(self) -> Attrs:
        return self.owned_attrs(stat.S_IFREG | 0o444, len(self.shown), self.ctx.now_ns(), NEVER)

    def open_read(self) -> ContentHandle:
        try:
            self.shown = self.ctx.jobs.prune_preview(self.entry).encode()
        except VmlfsError as exc:  # no stored rules, an unreadable store: said in the file, and in status
            self.ctx.jobs.record_error(self.entry, exc)
            self.shown = f"cannot preview: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else "")
            self.shown = self.shown.encode()
        return ContentHandle(self.shown)


class PruneFile(ControlFile):
    """``control/prune``: touch it to apply the entry's stored keep rules (forget, then gc)."""

    name = layout.PRUNE
    help = b"touch this file to prune the entry's backups by its stored keep rules (see prune-preview); see status\n"

    def check(self, data: bytes) -> None:
        if data.strip():
            raise InvalidRequest(f"refused prune request {data[:64]!r}: touch the file, write nothing")

    def start(self, key: str, data: bytes | None) -> Job:
        return self.ctx.jobs.start_prune(key)
