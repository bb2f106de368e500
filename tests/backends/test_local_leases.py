"""A local store registers a mount's reader lease without an fsync; what a backup commits still has one."""

from __future__ import annotations

import json
import os

from vmlfs.backends.local_store import LocalStore
from vmlfs.engine.model import EntryConfig


def _counting_fsyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_a_reader_lease_is_visible_at_once_and_not_fsynced(tmp_path, monkeypatch) -> None:
    store = LocalStore(tmp_path / "store")
    fsyncs = _counting_fsyncs(monkeypatch)
    name = store.take_lease()
    assert name is not None and fsyncs == [], "a lease dies with its process: it need not wait for the disk"
    (listed, content), = store.leases()
    assert listed == name and json.loads(content)["pid"] == os.getpid()
    assert not [p for p in (tmp_path / "store" / "leases").iterdir() if p.name.endswith(".tmp")]
    store.drop_lease(name)
    assert store.leases() == []


def test_an_entry_written_next_to_it_is_still_fsynced(tmp_path, monkeypatch) -> None:
    store = LocalStore(tmp_path / "store")
    fsyncs = _counting_fsyncs(monkeypatch)
    store.add_entry(EntryConfig("e", str(tmp_path)))
    assert fsyncs, "an entry's configuration must be on disk before it is renamed into place"
