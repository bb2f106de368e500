"""``attrs()`` never does I/O, for every kind of node: it runs inline on an adapter's event loop.

The tree is built over a store that records every call made to it (and to the
manifests and layer readers it hands out) and over a fake hypervisor that
records its calls; then each node's ``attrs()`` must leave both records empty.
"""

from __future__ import annotations

import stat
import time
from types import SimpleNamespace

import pytest

from tests.cvmfs_cache import make_cache, objects
from tests.fs.conftest import make_store
from vmlfs.backends.local_guest import LocalGuest
from vmlfs.engine.backup import run_backup
from vmlfs.engine.cvmfs import CvmfsSource
from vmlfs.archive.manifest import Manifest
from vmlfs.archive.seekable import SeekableReader
from vmlfs.app.session import Session
from vmlfs.engine.model import EntryConfig
from vmlfs.errors import InvalidRequest
from vmlfs.fs.control import Jobs
from vmlfs.fs.files import StatusFile
from vmlfs.fs.layout import Kind
from vmlfs.fs.protocol import FsNode
from vmlfs.fs import state as state_module
from vmlfs.fs.protocol import SHORT
from vmlfs.fs.state import MountState
from vmlfs.fs.tree import VirtualDir


class Recording:
    """Stands for ``target`` and appends ``name.method`` to ``calls`` for every method called through it."""

    def __init__(self, target: object, name: str, calls: list[str]) -> None:
        self._target, self._name, self._calls = target, name, calls

    def __getattr__(self, attr: str):
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            self._calls.append(f"{self._name}.{attr}")
            result = value(*args, **kwargs)
            if isinstance(result, (Manifest, SeekableReader)):  # their queries and reads are I/O too
                return Recording(result, type(result).__name__, self._calls)
            return result

        return call


class FakeVm:
    """A VmPort for one domain with two snapshots, recording every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def snapshot_names(self, domain: str) -> list[str]:
        self.calls.append("snapshot_names")
        return ["base", "child"]

    def snapshot_xml(self, domain: str, name: str) -> bytes:
        self.calls.append("snapshot_xml")
        return f"<domainsnapshot><name>{name}</name></domainsnapshot>\n".encode()

    def snapshot_tree(self, domain: str) -> bytes:
        self.calls.append("snapshot_tree")
        return b"base\n  child *\n"

    def take_snapshot(self, domain: str, description: str) -> str:
        self.calls.append("take_snapshot")
        return "vmlfs-now"

    def provision(self, request: str, report) -> str:
        self.calls.append("provision")
        return "provisioned"

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def recorded(tmp_path):
    s = make_store(tmp_path)
    s.store().add_entry(EntryConfig("vm1", str(s.home), domain="cvm"))
    s.backup()
    s.backup()  # an incremental too: its files read their base's layer
    shared = make_cache(tmp_path / "cvmfs", objects(3))  # and one with a CernVM-FS cache part (cvmfs-cache.txt)
    run_backup(s.store(), s.store().load_entry("vm1"), LocalGuest(s.home),
               cvmfs=CvmfsSource(LocalGuest(shared), "/var/lib/cvmfs"))
    calls: list[str] = []
    store = Recording(s.store(), "store", calls)
    vm = FakeVm()
    session = Session(str(s.store_path), shared_store=True)
    session.store = lambda **_: store  # type: ignore[method-assign]  # every use case sees the recording store
    st = MountState(store, Jobs(session, vm), owner_uid=1000, owner_gid=1000)  # type: ignore[arg-type]
    yield st, calls, vm
    st.close()


def every_node(node: FsNode, kinds: set[Kind]) -> list[FsNode]:
    """``node`` and everything below it, built as lookups and listings build them."""
    found = [node]
    if isinstance(node, VirtualDir):
        kinds.update(slot.kind for slot in node.slots())
    try:
        children = node.listing().entries(0, 1 << 20)
    except InvalidRequest:  # not a directory
        return found
    for _, _, child in children:
        found += every_node(child, kinds)
    return found


def test_attrs_of_every_node_kind_make_no_store_or_hypervisor_call(recorded) -> None:
    st, calls, vm = recorded
    kinds: set[Kind] = set()
    nodes = every_node(st.root, kinds)
    for node in nodes:  # use them too: opens fetch status and vm files, reads open layers, readlink looks again
        if stat.S_ISREG(node.attrs().mode):
            node.open_read().read(0, 100)
        elif stat.S_ISLNK(node.attrs().mode):
            node.readlink()
    assert kinds == set(Kind), "the tree holds a node of every kind"
    built = {type(node).__name__ for node in nodes}
    assert built >= {"RootDir", "EntriesDir", "EntryDir", "BackupDir", "BackupFile", "InfoFile", "LatestLink",
                     "ControlDir", "StatusFile", "SnapshotFile", "VmSnapshotFile", "ProvisionFile", "VmDir", "VmFile",
                     "ArchiveDir", "ArchiveFile", "ArchiveLink"}, built
    assert calls and vm.calls, "building the tree asked the store and the hypervisor (the recorders work)"

    st._records.clear()  # no metadata cached either: an attrs() that wanted it would have to ask the store
    for node in nodes:
        calls.clear()
        vm.calls.clear()
        node.attrs()
        assert calls == [] and vm.calls == [], f"{type(node).__name__}.attrs() did I/O: {calls + vm.calls}"


def test_what_the_adapter_calls_inline_makes_no_store_or_hypervisor_call(recorded) -> None:
    """``listing_cached``, ``open_read_cached`` and ``Listing.entries_cached`` run on the event loop too."""
    st, calls, vm = recorded
    nodes = every_node(st.root, set())
    for home in (node for node in nodes if type(node).__name__ == "ArchiveDir" and node.row.id == 1):
        home.listing()  # fetches the pages of the directories below it ahead: their openings are from memory
    served = 0
    for node in nodes:
        calls.clear()
        vm.calls.clear()
        listing = node.listing_cached()
        if listing is not None:
            served += len(listing.entries_cached(0, 1 << 20) or [])
        if node.open_read_cached() is not None:
            served += 1
        assert calls == [] and vm.calls == [], f"{type(node).__name__} did I/O inline: {calls + vm.calls}"
    assert served > 10, "some directories and files were opened from memory (the check is not vacuous)"


def test_after_the_warm_up_a_first_read_of_the_newest_backup_opens_nothing(recorded) -> None:
    st, calls, _ = recorded
    st.store.set_default_entry("vm1")  # of two entries, the warm-up opens the default's (a full backup)
    st.warm()
    entry = st.root.lookup(b"entries").lookup(b"vm1")
    newest = entry.lookup(b"latest").readlink()
    calls.clear()
    home = entry.lookup(newest).lookup(b"home")
    assert home.lookup(b"src").lookup(b"main.py").open_read().read(0, 5) == b"print"
    opened = [call for call in calls if call.startswith("store.open")]
    assert opened == [], f"the first read opened {opened}"
    calls.clear()
    other = st.root.lookup(b"entries").lookup(b"e1")
    other.lookup(other.lookup(b"latest").readlink()).lookup(b"home").lookup(b"run.sh").open_read().read(0, 5)
    assert "store.open_manifest" in calls, "another entry's backup opens at its first access (the check can fail)"


def test_the_check_catches_a_node_that_does_io_in_attrs(recorded) -> None:
    """The recorder is not blind: an attrs() that reads the store (as the status file's once did) is caught."""
    st, calls, vm = recorded

    class StatusReadingTheStore(StatusFile):
        def attrs(self):
            self.ctx.jobs.status(self.entry)  # the report names the default entry: a store read
            return super().attrs()

    node = StatusReadingTheStore(st, None)
    calls.clear()
    node.attrs()
    assert "store.default_entry" in calls
    entry = st.root.lookup(b"entries").lookup(b"e1")
    calls.clear()
    entry.listing().entries(0, 10)
    assert "store.timestamps" in calls, "methods other than attrs() do reach the store, and are recorded"


def test_latest_comes_from_a_listing_at_most_a_second_old(recorded, monkeypatch) -> None:
    """A path walk through ``latest/`` reads the link each time (the kernel caches no symlink target):
    ``ls -lR latest/home`` must not list the store once per file, and a listing SHORT old is taken again."""
    st, calls, _ = recorded
    now = [1000.0]
    monkeypatch.setattr(state_module, "time", SimpleNamespace(monotonic=lambda: now[0], time_ns=time.time_ns))
    latest = st.root.lookup(b"entries").lookup(b"e1").lookup(b"latest")
    calls.clear()
    targets = {latest.readlink() for _ in range(100)}
    assert len(targets) == 1 and calls.count("store.timestamps") <= 1, calls
    assert latest.readlink_cached() in targets and calls.count("store.timestamps") <= 1, "from memory, on the event loop"
    now[0] += SHORT
    calls.clear()
    assert latest.readlink_cached() is None and calls == [], "a stale listing is not used, nor refreshed inline"
    assert latest.readlink() in targets and calls.count("store.timestamps") == 1, calls


def test_a_path_walk_lists_the_store_once_a_second_and_finds_a_new_backup_at_once(recorded, monkeypatch) -> None:
    """Every step of a path walk looks its name up in its directory, and each lookup listed the store
    (on S3 one to three requests a step, twelve before the first byte of a file): a listing under
    SHORT old answers a name it has, and a name it lacks is looked for in a fresh listing."""
    st, calls, _ = recorded
    now = [1000.0]
    monkeypatch.setattr(state_module, "time", SimpleNamespace(monotonic=lambda: now[0], time_ns=time.time_ns))
    for _ in range(20):
        entry = st.root.lookup(b"entries").lookup(b"e1")
        backup = entry.lookup(entry.lookup(b"latest").readlink())
        backup.lookup(b"home")
    once = {"store.entry_names": 1, "store.load_entry": 1,
            "store.timestamps": 2}  # each of the two entries once: /entries lists them for its time
    assert all(calls.count(call) <= most for call, most in once.items()), calls
    stamps = st.store.timestamps("e1")
    config = st.store.load_entry("e1")
    run_backup(st.store, config, LocalGuest(config.guest))  # committed a moment ago, as by another process
    new = (set(st.store.timestamps("e1")) - set(stamps)).pop()
    calls.clear()
    assert entry.lookup(new.encode()) and calls.count("store.timestamps") == 1, "not in the recent listing: listed again"
    now[0] += SHORT
    calls.clear()
    st.root.lookup(b"entries").lookup(b"e1").lookup(b"latest")
    assert calls.count("store.entry_names") == calls.count("store.timestamps") == 1, calls


def test_an_entry_given_a_domain_lists_vm_at_once(recorded, monkeypatch) -> None:
    """readdir always reads the entry again, so ``vm/`` appears as soon as ``entry edit`` names a domain."""
    import dataclasses

    st, _, _ = recorded
    now = [1000.0]
    monkeypatch.setattr(state_module, "time", SimpleNamespace(monotonic=lambda: now[0], time_ns=time.time_ns))
    entry = st.root.lookup(b"entries").lookup(b"e1")
    entry.lookup(b"latest")
    assert b"vm" not in [name for _, name, _ in entry.listing().entries(0, 100)]
    st.store.save_entry(dataclasses.replace(st.store.load_entry("e1"), domain="cvm"))
    assert b"vm" in [name for _, name, _ in entry.listing().entries(0, 100)], "the listing read the entry again"
    assert entry.lookup(b"vm"), "and a lookup then finds it"


def test_deciding_whether_to_serve_attributes_reads_an_entry_s_records_with_one_store_call(recorded) -> None:
    """The first getxattr reads every record: one call per entry (on S3 its GETs go side by side), not per backup."""
    st, calls, _ = recorded
    config = st.store.load_entry("e1")
    for _ in range(3):
        run_backup(st.store, config, LocalGuest(config.guest))
    calls.clear()
    st.serves_xattrs()
    # Each entry's newest record is read by its listing (the entry's time), the others in one call.
    assert calls.count("store.backup_record") == 2 and calls.count("store.backup_records") == 1, calls


def test_status_size_is_what_a_read_returns(recorded) -> None:
    st, calls, vm = recorded
    for path in ((b"control", b"status"), (b"entries", b"e1", b"control", b"status")):
        node = st.root
        for name in path:
            node = node.lookup(name)
        assert node.attrs().size == len(node.open_read().read(0, 1 << 16)) > 0, path


@pytest.mark.parametrize("probe", [b".Trash", b".Trash-1000", b".hidden", b".DS_Store", b"._fit.C", b"desktop.ini",
                                   b"Desktop.INI", b"autorun.inf", b".xdg-volume-info"])
def test_file_manager_probes_are_enoent_without_a_store_call(recorded, probe: bytes) -> None:
    from vmlfs.errors import NotFound

    st, calls, _ = recorded
    entry = st.root.lookup(b"entries").lookup(b"e1")
    backup = entry.lookup(entry.listing().entries(0, 1)[0][1])  # the oldest backup's directory
    for directory in (st.root, st.root.lookup(b"entries"), entry, backup):
        calls.clear()
        with pytest.raises(NotFound):
            directory.lookup(probe)
        assert calls == [], f"{type(directory).__name__} asked the store for {probe!r}: {calls}"
    assert entry.lookup(b"latest"), "a real name is still looked up"
