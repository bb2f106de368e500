"""Verify backups: every checksum the store records, re-read from disk.

For each backup: its metadata parses; the manifest's and the layer's size
and sha256 match what meta.json recorded; the layer's seek table is sound;
every row of the tree passes the checks restore applies (names, types, modes,
owners, link targets, hardlink groups: vmlfs/engine/tree_check.py), so verify
never says "ok" for a backup restore would refuse; every regular file's bytes,
read through the frames (zstd frame checksums and sizes checked), match the
sha256 in the manifest; env.txt and history.txt match theirs. A byte range already verified for one backup is not read again
for the next one that shares it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from vmlfs.engine.store import LAYER, MANIFEST, StoreLayout
from vmlfs.engine.content import Layers, file_chunks
from vmlfs.engine.tree_check import tree_problems
from vmlfs.errors import VmlfsError


@dataclass
class VerifyReport:
    backups: int = 0
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    damaged_backups: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Verifier:
    def __init__(self, store: StoreLayout, on_bytes: Callable[[int], None]) -> None:
        self.store = store
        self.on_bytes = on_bytes
        self.report = VerifyReport()
        self.good_ranges: set[tuple[str, int, int, bytes]] = set()
        self.layer_status: dict[tuple[str, str], str | None] = {}

    def _layer_problem(self, entry: str, ts: str) -> str | None:
        """Check a layer file once against its backup's meta.json (size, sha256)."""
        key = (entry, ts)
        if key not in self.layer_status:
            problem = None
            try:
                meta = self.store.meta(entry, ts)
                size, digest = self.store.file_digest(entry, ts, LAYER)
                if (size, digest) != (meta.layer["size"], meta.layer["sha256"]):
                    problem = f"layer of {entry}@{ts}: size/sha256 differ from meta.json (damaged)"
                else:
                    self.store.open_layer(entry, ts).close()  # parses and checks the seek table
            except FileNotFoundError:
                problem = f"layer of {entry}@{ts} is missing"
            except VmlfsError as exc:
                problem = str(exc)
            self.layer_status[key] = problem
        return self.layer_status[key]

    def backup(self, entry: str, ts: str) -> None:
        where = f"{entry}@{ts}"
        self.report.backups += 1
        before = len(self.report.problems)
        try:
            meta = self.store.meta(entry, ts)
        except VmlfsError as exc:
            self._problem(where, str(exc))
            return
        for name, record in [(MANIFEST, meta.manifest), *meta.files.items()]:
            try:
                if self.store.file_digest(entry, ts, name) != (record["size"], record["sha256"]):
                    self._problem(where, f"{name} differs from the size/sha256 in meta.json (damaged)")
            except OSError as exc:
                self._problem(where, f"{name}: {exc.strerror}")
        problem = self._layer_problem(entry, ts)
        if problem:
            self._problem(where, problem)
        self._files(entry, ts, where)
        if len(self.report.problems) > before:
            self.report.damaged_backups.append(where)

    def _files(self, entry: str, ts: str, where: str) -> None:
        try:
            manifest = self.store.open_manifest(entry, ts)
        except VmlfsError as exc:
            self._problem(where, str(exc))
            return
        for problem in tree_problems(manifest):  # what restore would refuse or skip, on every row kind
            self._problem(where, problem)
        layers = Layers(lambda layer_ts: self.store.open_layer(entry, layer_ts))
        try:
            for node in manifest.files_in_layer_order():
                self.report.files += 1
                key = (node.layer, node.data_offset, node.size, node.sha256)
                if key in self.good_ranges:
                    continue
                try:
                    for chunk in file_chunks(layers, node):
                        self.on_bytes(len(chunk))
                    self.report.bytes += node.size
                    self.good_ranges.add(key)  # type: ignore[arg-type]
                except VmlfsError as exc:
                    path = os.fsdecode(b"/".join(manifest.path_of(node)))
                    self._problem(where, f"file {path} (in layer {node.layer}): {exc}")
        except VmlfsError as exc:
            self._problem(where, str(exc))
        finally:
            manifest.close()
            layers.close()

    def _problem(self, where: str, text: str) -> None:
        self.report.problems.append(f"{where}: {text}")


def verify_store(store: StoreLayout, targets: list[tuple[str, str]], on_bytes: Callable[[int], None] = lambda n: None) -> VerifyReport:
    """Verify the given (entry, timestamp) backups; the report lists every problem found."""
    verifier = _Verifier(store, on_bytes)
    for entry, ts in targets:
        verifier.backup(entry, ts)
    return verifier.report
