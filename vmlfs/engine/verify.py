"""Verify backups: every checksum the store records, re-read from disk.

For each backup: its metadata parses; its tree files, env.txt and history.txt
have the size and sha256 its record names; every row of the tree passes the
checks restore applies (names, types, modes, owners, link targets, hardlink
groups: vmlfs/engine/tree_check.py), so verify never says "ok" for a backup
restore would refuse; every layer its files point into hashes to its name
(format 2; format 1: to the sha256 in its backup's meta.json) and has a sound
seek table; every regular file's bytes, read through the frames (zstd frame
checksums and sizes checked), match the sha256 in the tree. A layer or byte
range already verified for one backup is not read again for the next one that
shares it. A backup's CernVM-FS cache part (its tree and the layers it points
into) is checked the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from vmlfs.archive.manifest import Manifest
from vmlfs.engine.model import BackupMeta
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

    def _layer_problem(self, entry: str, name: str) -> str | None:
        """Check a layer once: against its name (format 2) or its backup's meta.json (format 1)."""
        key = (entry, name)
        if key not in self.layer_status:
            problem = None
            try:
                if self.store.format >= 2:
                    if self.store.object_digest("layers", name)[1] != name:
                        problem = f"layer {name[:12]}: content differs from its sha256 name (damaged)"
                else:
                    meta = self.store.meta(entry, name)
                    if self.store.file_digest(entry, name, LAYER) != (meta.layer["size"], meta.layer["sha256"]):
                        problem = f"layer of {entry}@{name}: size/sha256 differ from meta.json (damaged)"
                if problem is None:
                    self.store.open_layer(entry, name).close()  # parses and checks the seek table
            except FileNotFoundError:
                problem = f"layer {name} of {entry} is missing"
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
        for name, check, record in self._recorded(entry, ts, meta):
            try:
                if check() != (record["size"], record["sha256"]):
                    self._problem(where, f"{name} differs from the size/sha256 its record names (damaged)")
            except OSError as exc:
                self._problem(where, f"{name}: {exc.strerror or exc}")
        layers = [meta.layer["sha256"]] if self.store.format >= 2 else [ts]
        for layer in layers:
            problem = self._layer_problem(entry, layer)
            if problem:
                self._problem(where, problem)
        self._files(entry, ts, where, lambda: self.store.open_manifest(entry, ts))
        if self.store.format >= 2 and meta.cvmfs is not None:
            cache = f"{where} (cvmfs cache)"
            problem = self._layer_problem(entry, meta.cvmfs["layer"]["sha256"])
            if problem:
                self._problem(cache, problem)
            self._files(entry, ts, cache, lambda: self.store.open_cvmfs_tree(entry, ts))
        if len(self.report.problems) > before:
            self.report.damaged_backups.append(where)

    def _recorded(self, entry: str, ts: str, meta: BackupMeta) -> list[tuple[str, Callable[[], tuple[int, str]], dict]]:
        """(name, how to hash it as stored, its record) for every file a backup's record names but the layers."""
        store = self.store
        if store.format < 2:
            return [(name, lambda name=name: store.file_digest(entry, ts, name), record)
                    for name, record in [(MANIFEST, meta.manifest), *meta.files.items()]]
        tree = meta.manifest
        objects = [("tree", "trees", tree), *([("checkpoint tree", "trees", tree["base"])] if tree["base"] else []),
                   *((name, "blobs", record) for name, record in meta.files.items()),
                   *([("cvmfs cache tree", "trees", meta.cvmfs["tree"])] if meta.cvmfs else [])]
        return [(name, lambda kind=kind, record=record: store.object_digest(kind, record["sha256"]), record)
                for name, kind, record in objects]

    def _files(self, entry: str, ts: str, where: str, open_tree: Callable[[], Manifest]) -> None:
        try:
            manifest = open_tree()
        except VmlfsError as exc:
            self._problem(where, str(exc))
            return
        for problem in tree_problems(manifest):  # what restore would refuse or skip, on every row kind
            self._problem(where, problem)
        layers = Layers(lambda layer_ts: self.store.open_layer(entry, layer_ts))
        try:
            for layer in sorted(manifest.layers()):  # older layers this tree still points into
                problem = self._layer_problem(entry, layer)
                if problem:
                    self._problem(where, problem)
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
