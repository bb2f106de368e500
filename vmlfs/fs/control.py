"""Control files: what a write into ``control/snapshot`` means, and the jobs it starts.

Protocol (docs/mount.md):

* ``touch control/snapshot`` starts a backup of the default kind (full first,
  incremental after); writing one word, ``full``, ``incremental`` or
  ``differential`` (a trailing newline is fine), chooses the kind.
* Anything else is refused with EINVAL and nothing runs: unknown words, extra
  words, control characters, or shell-looking input such as ``; rm -rf /``,
  ``$(id)`` or ``../x``. The request is never interpreted beyond matching
  one of three words.
* One backup per entry at a time: a request for an entry that is backing up
  (in this mount, or in another process holding the entry's lock) is
  refused with EBUSY.
* Every request, refusal, result and failure is recorded with its time and
  shows in ``control/status``, because errors of work that continues after
  ``close`` would otherwise go nowhere.

The same machinery runs the hypervisor jobs (``control/vm-snapshot``: touch
only; ``/control/provision``: one ``NAME``, ``NAME@TS`` or release word):
each is a :class:`Job` with a ``work`` callable, one at a time per entry
(provisioning under the mount-wide key :data:`PROVISION`), with its progress
and outcome in ``status``. libvirt is reached only through the
:class:`VmPort` the mount was given, so this module imports none of it.

Pure: no pyfuse3 or trio. :meth:`Jobs.run` blocks and is meant for a worker
thread; everything else is quick and thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Protocol

from vmlfs import names
from vmlfs.app.backups import BackupRequest, take_backup
from vmlfs.app.prune import backups, plan_prune, prune
from vmlfs.app.refs import check_ref
from vmlfs.app.session import Session
from vmlfs.engine.model import KINDS
from vmlfs.errors import Busy, InvalidRequest, NotFound, VmlfsError

log = logging.getLogger(__name__)

MAX_REQUEST = 64
MAX_SNAPSHOT_REQUEST = 160  # a snapshot name has up to 128 characters
_ALLOWED = frozenset(b"abcdefghijklmnopqrstuvwxyz \t\r\n")
_TARGET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-@ \t\r\n")
_SNAPSHOT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:+@- \t\r\n")
PROVISION = "/provision"  # the job key of provisioning: no entry name contains '/'


class VmPort(Protocol):
    """What the mount needs from the hypervisor (implemented by :class:`vmlfs.app.vm.SessionVm`)."""

    def snapshot_names(self, domain: str) -> list[str]: ...
    def snapshot_xml(self, domain: str, name: str) -> bytes: ...
    def snapshot_tree(self, domain: str) -> bytes: ...
    def take_snapshot(self, domain: str, description: str) -> str: ...
    def revert(self, domain: str, snapshot: str) -> str: ...
    def provision(self, request: str, report: Callable[[str], None]) -> str: ...
    def close(self) -> None: ...


def _refuse(data: bytes, why: str) -> InvalidRequest:
    shown = data[:MAX_REQUEST].decode("ascii", "backslashreplace")
    return InvalidRequest(f"refused control request {shown!r}: {why}; write one of: {', '.join(KINDS)}")


def _words(data: bytes) -> list[bytes]:
    if len(data) > MAX_REQUEST:
        raise _refuse(data, f"longer than {MAX_REQUEST} bytes")
    if not set(data) <= _ALLOWED:
        raise _refuse(data, "only lower-case letters and white space are accepted")
    words = data.split()
    if len(words) > 1:
        raise _refuse(data, "extra words")
    return words


def parse_request(data: bytes) -> str | None:
    """The backup kind a complete request asks for; None (empty request) means the default kind."""
    words = _words(data)
    if not words:
        return None
    if words[0].decode() not in KINDS:
        raise _refuse(data, "unknown word")
    return words[0].decode()


def check_partial(data: bytes) -> None:
    """Raise InvalidRequest unless ``data`` can still become a valid request (checked at every write)."""
    words = _words(data)
    if not words:
        return
    word = words[0].decode()
    complete = data[-1:].isspace()
    if (complete and word not in KINDS) or not any(k.startswith(word) for k in KINDS):
        raise _refuse(data, "unknown word")


def parse_target(data: bytes, *, partial: bool = False) -> str:
    """A ``/control/provision`` request: one word ``NAME``, ``NAME@TS`` or a release, checked as names are."""
    shown = data[:MAX_REQUEST].decode("ascii", "backslashreplace")
    if len(data) > MAX_REQUEST or not set(data) <= _TARGET or len(data.split()) > 1:
        raise InvalidRequest(f"refused provision request {shown!r}: write one word, NAME, NAME@TIMESTAMP or a CernVM release")
    word = data.strip().decode()
    if partial:
        return word
    try:
        return check_ref(word)
    except InvalidRequest as exc:
        raise InvalidRequest(f"refused provision request {shown!r}: {exc.message}") from None


def parse_snapshot(data: bytes, *, partial: bool = False) -> str:
    """A ``control/vm-revert`` request: one snapshot name, checked by :func:`vmlfs.names.snapshot_name`."""
    shown = data[:MAX_REQUEST].decode("ascii", "backslashreplace")
    words = data.split()
    if len(data) > MAX_SNAPSHOT_REQUEST or len(words) > 1 or not set(data) <= _SNAPSHOT:
        raise InvalidRequest(f"refused vm-revert request {shown!r}: write one snapshot name (see ../vm/)")
    word = data.strip().decode()
    if partial:
        return word
    try:
        return names.snapshot_name(word)
    except InvalidRequest as exc:
        raise InvalidRequest(f"refused vm-revert request {shown!r}: {exc.message}") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Job:
    """One job started through a control file (a backup, a VM snapshot, a provisioning); for a backup
    also the progress sink ``take_backup`` reports to."""

    entry: str
    kind: str | None
    started: float = field(default_factory=time.time)
    scanned_entries: int = 0
    files: int = 0
    bytes: int = 0
    action: str = "backup"
    work: Callable[["Job"], str] | None = None
    """Runs a non-backup job (blocking) and returns its result line."""
    step: str = ""

    def report(self, step: str) -> None:
        self.step = step

    def scanned(self, count: int) -> None:
        self.scanned_entries = count

    def packed(self, files: int, nbytes: int) -> None:
        self.files += files
        self.bytes += nbytes


@dataclass
class _State:
    running: Job | None = None
    last_result: str | None = None
    last_error: str | None = None


class Jobs:
    """Backups run through control files, one per entry, and what happened to them.

    A backup is :func:`vmlfs.app.backups.take_backup` with the entry's
    defaults, exactly what ``vmlfs backup NAME`` runs.
    """

    def __init__(self, session: Session, vm: VmPort | None = None) -> None:
        self.session = session
        self.store = session.store()
        self.vm = vm
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._mount_error: str | None = None
        self.on_finished: Callable[[str], None] = lambda entry: None
        """Told the entry (or provisioning's key) when a job ends, whatever its outcome (the mount
        lists the entry again)."""

    def _state(self, entry: str) -> _State:
        return self._states.setdefault(entry, _State())

    def record_error(self, entry: str | None, exc: VmlfsError) -> None:
        """Remember a refused request or a failure, with its time, for ``status``."""
        line = f"{_now()} {type(exc).__name__}: {exc.message}"
        with self._lock:
            if entry is None:
                self._mount_error = line
            else:
                self._state(entry).last_error = line

    def resolve(self, entry: str | None) -> str:
        """The entry a control file acts on: its own, or the store's default for /control."""
        if entry is not None:
            return entry
        default = self.store.default_entry()
        if default is None:
            exc = InvalidRequest("no default entry: /control/snapshot needs one",
                                 hint="use entries/<entry>/control/snapshot or 'vmlfs entry default NAME'")
            self.record_error(None, exc)
            raise exc
        return default

    def check_idle(self, entry: str) -> None:
        """Raise Busy if ``entry`` is backing up here or in another process (probing its lock)."""
        with self._lock:
            running = self._state(entry).running
        if running is not None:
            exc = Busy(f"entry {entry!r} is already backing up (started {self._ago(running)} ago)")
            self.record_error(entry, exc)
            raise exc
        try:
            self.store.lock(entry).acquire().release()
        except Busy as exc:
            self.record_error(entry, exc)
            raise

    def start(self, entry: str, kind: str | None) -> Job:
        """Reserve ``entry`` for a new job; the caller then runs :meth:`run` in a worker thread."""
        self.check_idle(entry)
        with self._lock:
            state = self._state(entry)
            if state.running is not None:
                exc = Busy(f"entry {entry!r} is already backing up")
            else:
                state.running = job = Job(entry, kind)
                return job
        self.record_error(entry, exc)
        raise exc

    def start_task(self, key: str, action: str, work: Callable[[Job], str], *, probe_lock: bool = True) -> Job:
        """Reserve ``key`` (an entry, or :data:`PROVISION`) for a job that runs ``work``."""
        if probe_lock:
            self.check_idle(key)
        with self._lock:
            state = self._state(key)
            if state.running is None:
                state.running = job = Job(key, None, action=action, work=work)
                return job
            exc = Busy(f"{state.running.action} of {key!r} is already running")
        self.record_error(key, exc)
        raise exc

    def port(self, key: str | None) -> VmPort:
        """The hypervisor, or NotFound recorded in status when the mount has none."""
        if self.vm is None:
            exc = NotFound("this mount has no libvirt connection", hint="mount with --libvirt-uri")
            self.record_error(key, exc)
            raise exc
        return self.vm

    def domain(self, entry: str) -> str:
        """The libvirt domain ``entry`` names; InvalidRequest (recorded) when it names none."""
        domain = self.store.load_entry(entry).domain
        if not domain:
            exc = InvalidRequest(f"entry {entry!r} names no libvirt domain", hint="vmlfs entry add ... --domain NAME")
            self.record_error(entry, exc)
            raise exc
        return domain

    def start_vm_snapshot(self, entry: str) -> Job:
        """A libvirt snapshot of ``entry``'s domain, as a job (touch ``control/vm-snapshot``)."""
        vm, domain = self.port(entry), self.domain(entry)

        def work(job: Job) -> str:
            job.report(f"snapshotting domain {domain}")
            name = vm.take_snapshot(domain, f"taken through a vmlfs mount (entry {entry})")
            return f"VM snapshot {name} of domain {domain}"

        return self.start_task(entry, "vm-snapshot", work, probe_lock=False)

    def start_vm_revert(self, entry: str, snapshot: str) -> Job:
        """Revert ``entry``'s domain to ``snapshot`` (a validated name), as a job (``control/vm-revert``)."""
        vm, domain = self.port(entry), self.domain(entry)

        def work(job: Job) -> str:
            job.report(f"reverting domain {domain} to {snapshot}")
            state = vm.revert(domain, snapshot)
            return f"reverted domain {domain} to snapshot {snapshot}; it is now {state}"

        return self.start_task(entry, "vm-revert", work, probe_lock=False)

    def prune_preview(self, entry: str) -> str:
        """The dry run of ``entry``'s stored keep rules, as ``vmlfs prune NAME --dry-run`` prints it (blocks)."""
        plan = plan_prune(self.session, [entry])
        return plan.report() + plan.summary(f"{plan.frees} bytes") + "\n"

    def start_prune(self, entry: str) -> Job:
        """Apply ``entry``'s stored keep rules (forget, then gc), as a job (touch ``control/prune``)."""

        def work(job: Job) -> str:
            job.report("deciding which backups to keep")
            plan = plan_prune(self.session, [entry])
            job.report(f"forgetting {backups(len(plan.doomed))}, then collecting garbage")
            done = prune(self.session, plan)
            freed = done.gc.purged_bytes if done.gc is not None else 0
            return f"pruned {entry}: forgot {backups(len(done.forgotten))}, gc freed {freed} bytes"

        return self.start_task(entry, "prune", work)

    def check_not_running(self, key: str) -> None:
        """Busy (recorded) if a job for ``key`` runs in this mount: refused at open, not only at close."""
        with self._lock:
            running = self._state(key).running
        if running is not None:
            exc = Busy(f"{running.action} of {key!r} is already running (started {self._ago(running)} ago)")
            self.record_error(key, exc)
            raise exc

    def start_provision(self, request: str) -> Job:
        """Provision ``request`` (``NAME``, ``NAME@TS`` or a release), one at a time per mount."""
        vm = self.port(PROVISION)
        return self.start_task(PROVISION, f"provisioning {request}", lambda job: vm.provision(request, job.report),
                               probe_lock=False)

    def run(self, job: Job) -> None:
        """Take the backup or run the job's work (blocking); the outcome goes to status, never to the caller."""
        try:
            if job.work is not None:
                result = f"{_now()} {job.work(job)}"
                log.info("control: %s: %s", job.entry, result)
                with self._lock:
                    self._state(job.entry).last_result = result
                return
            meta = take_backup(self.session, job.entry, BackupRequest(kind=job.kind), progress=job, on_retry=job.report)
            result = (f"{_now()} {meta.timestamp} {meta.kind} backup: {meta.stats.get('files', 0)} files,"
                      f" {meta.stats.get('bytes', 0)} bytes, packed {meta.stats.get('packed_files', 0)} files"
                      f" in {meta.duration_s:.1f} s" + (f", VM snapshot {meta.vm_snapshot}" if meta.vm_snapshot else ""))
            log.info("control: %s: %s", job.entry, result)
            with self._lock:
                self._state(job.entry).last_result = result
        except VmlfsError as exc:
            log.warning("control: %s of %s failed: %s", job.action, job.entry, exc)
            self.record_error(job.entry, exc)
        except Exception as exc:  # noqa: BLE001  (a bug must not leave the entry marked running)
            log.exception("control: %s of %s crashed", job.action, job.entry)
            self.record_error(job.entry, VmlfsError(f"internal error: {exc!r}"))
        finally:
            with self._lock:
                self._state(job.entry).running = None
            self.on_finished(job.entry)

    def active(self) -> list[str]:
        """Entries with a backup running now."""
        with self._lock:
            return sorted(e for e, state in self._states.items() if state.running is not None)

    def running(self, entry: str) -> Job | None:
        with self._lock:
            return self._state(entry).running

    @staticmethod
    def _ago(job: Job) -> str:
        return f"{time.time() - job.started:.1f} s"

    def _entry_lines(self, entry: str) -> list[str]:
        with self._lock:
            state = self._state(entry)
            job, result, error = state.running, state.last_result, state.last_error
        lines = ["provisioning:" if entry == PROVISION else f"entry: {entry}"]
        if job is None:
            lines.append("running: none")
        elif job.work is not None:
            lines.append(f"running: {job.action} for {self._ago(job)}")
            lines.append(f"progress: {job.step or 'starting'}")
        else:
            lines.append(f"running: {job.kind or 'default'} backup for {self._ago(job)}")
            lines.append(f"progress: {job.scanned_entries} entries scanned, {job.files} files, {job.bytes} bytes packed")
        lines.append(f"last result: {result or 'none'}")
        lines.append(f"last error: {error or 'none'}")
        return lines

    _default_seen: str | None = None  # the default entry as the last mount-wide report read it

    def status(self, entry: str | None) -> bytes:
        """The text of a ``status`` file: one entry's, or the mount-wide report (which reads the default entry)."""
        if entry is not None:
            return ("\n".join(self._entry_lines(entry)) + "\n").encode()
        try:
            default = self.store.default_entry()
        except VmlfsError as exc:
            default = f"unknown ({exc})"
        self._default_seen = default
        return self._report(default)

    def status_size(self, entry: str | None) -> int:
        """The length of the ``status`` text now, from memory only (for getattr, which must not
        touch the store): the mount-wide report shows the default entry as last read."""
        if entry is not None:
            return len(self.status(entry))
        return len(self._report(self._default_seen))

    def _report(self, default: str | None) -> bytes:
        with self._lock:
            known = sorted(self._states)
            mount_error = self._mount_error
        lines = [f"default entry: {default or 'none'}", f"last error: {mount_error or 'none'}"]
        for name in known:
            lines += [""] + self._entry_lines(name)
        return ("\n".join(lines) + "\n").encode()
