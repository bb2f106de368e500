"""The JSON documents of a store: store header, entry config, backup metadata.

Each document carries a ``version``; readers refuse an unknown major version
and treat malformed content as :class:`CorruptData` naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from vmlfs import names
from vmlfs.errors import CorruptData, InvalidRequest, UnsupportedVersion

if TYPE_CHECKING:
    from vmlfs.engine.retention import StoredPolicy

STORE_VERSION = "2.0"  # 2.0: layers and trees are shared objects (docs/FORMAT.md); 1.x is still read
ENTRY_VERSION = "1.2"  # 1.1: backup defaults ("backup": {...}) and keep rules ("prune"); 1.2: "cvmfs"; older readers ignore them
BACKUP_VERSION = "2.1"  # 2.1: layer members depth first (docs/FORMAT.md) and the optional "cvmfs" part; 2.0: a record
# naming objects; 1.0: meta.json of a backup directory
KINDS = ("full", "incremental", "differential")


def check_version(doc: dict[str, Any], expected: str, where: str, oldest: int | None = None) -> int:
    """The document's major version, if this vmlfs reads it: ``expected``'s major, or any
    major from ``oldest`` up to it. A newer major is refused."""
    version = doc.get("version")
    if not isinstance(version, str) or not version.split(".")[0].isdigit():
        raise CorruptData(f"{where}: missing or malformed version")
    major, mine = int(version.split(".")[0]), int(expected.split(".")[0])
    if not (oldest if oldest is not None else mine) <= major <= mine:
        raise UnsupportedVersion(
            f"{where}: format version {version} is newer than this vmlfs understands ({expected})",
            hint="upgrade vmlfs to read this store",
        )
    return major


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptData(f"{where}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptData(f"{where}: expected a JSON object")
    return doc


def dump_json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


VM_KEYS = {"memory": int, "cpus": int, "network": str, "ssh": str, "pool": str}


@dataclass(frozen=True)
class VmSettings:
    """An entry's ``vm`` settings for provisioning, with defaults (docs/cernvm.md: 2 GiB, 1 vCPU,
    libvirt's NAT network ``default``, libvirt's storage pool ``default``); ``ssh`` is ``HOST:PORT``,
    checked where it is used."""

    memory: int = 2048
    cpus: int = 1
    network: str = "nat"
    ssh: str | None = None
    pool: str = "default"

    @classmethod
    def from_entry(cls, vm: dict[str, Any]) -> "VmSettings":
        for key, value in vm.items():
            if key not in VM_KEYS or not isinstance(value, VM_KEYS[key]) or isinstance(value, bool):
                raise InvalidRequest(f"invalid entry vm setting {key}={value!r}",
                                     hint=f"known settings: {', '.join(f'{k} ({t.__name__})' for k, t in VM_KEYS.items())}")
        return cls(**vm)


@dataclass(frozen=True)
class BackupDefaults:
    """How an entry's backups are taken unless a request says otherwise (CLI flag, control file)."""

    vm_snapshot: bool = False
    consistent: bool = False
    retries: int = 0

    @classmethod
    def from_doc(cls, doc: Any) -> "BackupDefaults":
        if not isinstance(doc, dict) or set(doc) - set(cls.__dataclass_fields__):
            raise TypeError(f"backup defaults must be an object with keys {', '.join(cls.__dataclass_fields__)}")
        for key in ("vm_snapshot", "consistent"):
            if not isinstance(doc.get(key, False), bool):
                raise TypeError(f"backup.{key} must be true or false")
        retries = doc.get("retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
            raise TypeError("backup.retries must be an integer from 0 to 100")
        return cls(**doc)


@dataclass(frozen=True)
class CvmfsSettings:
    """Whether an entry's backups capture the guest's CernVM-FS cache, and where to find it.

    ``root`` is the guest's root directory as the backup sees it (``/`` for an SSH guest; a
    local-directory guest's file system, e.g. a mounted guest disk): the configuration is read
    at ``<root>/etc/cvmfs`` and the cache at ``<root><cache base>``. ``cache_base`` names the
    cache base on the guest instead of reading it from the configuration."""

    cache: bool = False
    root: str = "/"
    cache_base: str | None = None

    @classmethod
    def from_doc(cls, doc: Any) -> "CvmfsSettings":
        if not isinstance(doc, dict) or set(doc) - set(cls.__dataclass_fields__):
            raise TypeError(f"cvmfs must be an object with keys {', '.join(cls.__dataclass_fields__)}")
        if not isinstance(doc.get("cache", False), bool):
            raise TypeError("cvmfs.cache must be true or false")
        settings = cls(cache=doc.get("cache", False), root=_str(doc.get("root", "/")),
                       cache_base=_opt_str(doc.get("cache_base")))
        settings.check()
        return settings

    def check(self) -> None:
        for key in ("root", "cache_base"):
            value = getattr(self, key)
            if value is not None and (not value.startswith("/") or "\0" in value or "/../" in value + "/"):
                raise InvalidRequest(f"cvmfs {key} {value!r} must be an absolute path on the guest, without '..'")


@dataclass
class EntryConfig:
    """One logbook: where its guest is, what to back up, and how."""

    name: str
    guest: str
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    release: str | None = None
    domain: str | None = None
    env_file: str | None = None
    vm: dict[str, Any] = field(default_factory=dict)
    backup: BackupDefaults = field(default_factory=BackupDefaults)
    prune: StoredPolicy | None = None
    """The entry's keep rules for ``vmlfs prune NAME`` (and after every backup if it says so)."""
    cvmfs: CvmfsSettings = field(default_factory=CvmfsSettings)

    def to_json(self) -> bytes:
        doc = {**asdict(self), "prune": self.prune.to_doc() if self.prune is not None else None}
        return dump_json({"format": "vmlfs-entry", "version": ENTRY_VERSION, **doc})

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "EntryConfig":
        doc = parse_json(data, where)
        check_version(doc, ENTRY_VERSION, where)
        try:
            cfg = cls(
                name=names.entry_name(doc["name"]),
                guest=_str(doc["guest"]),
                include=_str_list(doc.get("include", [])),
                exclude=_str_list(doc.get("exclude", [])),
                release=_opt_str(doc.get("release")),
                domain=_opt_str(doc.get("domain")),
                env_file=_opt_str(doc.get("env_file")),
                vm=_object(doc.get("vm") or {}),
                backup=BackupDefaults.from_doc(doc.get("backup", {})),
                prune=_stored_policy(doc["prune"]) if doc.get("prune") is not None else None,
                cvmfs=CvmfsSettings.from_doc(doc.get("cvmfs", {})),
            )
        except (KeyError, TypeError, ValueError, InvalidRequest) as exc:
            raise CorruptData(f"{where}: malformed entry ({exc})") from None
        return cfg


@dataclass
class BackupMeta:
    """What ``meta.json`` says about one committed backup."""

    timestamp: str
    kind: str
    base: str | None
    started: str
    completed: str
    duration_s: float
    guest: str
    release: str | None
    stats: dict[str, int]
    layer: dict[str, Any]
    manifest: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    vm_snapshot: str | None = None
    cvmfs: dict[str, Any] | None = None
    """The CernVM-FS cache part, if captured: {base, layer, tree, objects, bytes, stored_objects,
    stored_bytes, repositories} (docs/FORMAT.md, "The cvmfs part")."""
    version: str = BACKUP_VERSION

    def to_json(self) -> bytes:
        doc = asdict(self)
        if doc["cvmfs"] is None:  # absent, as in every record before 2.1
            del doc["cvmfs"]
        return dump_json({"format": "vmlfs-backup", **doc})

    def summary(self) -> dict[str, Any]:
        """What a user wants to know about the backup, with stable keys: the mount's info.json and
        ``vmlfs list --json``."""
        stats = self.stats
        doc: dict[str, Any] = {
            "timestamp": self.timestamp,
            "kind": self.kind,
            "base": self.base,
            "release": self.release,
            "guest": self.guest,
            "started": self.started,
            "completed": self.completed,
            "duration_s": self.duration_s,
            "counts": {k: stats.get(k) for k in ("files", "dirs", "symlinks", "packed_files", "unchanged_files",
                                                 "deduplicated_files") if k in stats},
            "sizes": {
                "files_bytes": stats.get("bytes"),
                "packed_bytes": stats.get("packed_bytes"),
                "layer_bytes": self.layer.get("size"),
                "manifest_bytes": self.manifest.get("size"),
            },
            "warnings": list(self.warnings),
            "vm_snapshot": self.vm_snapshot,
        }
        if self.cvmfs is not None:
            doc["cvmfs_cache"] = {k: self.cvmfs[k] for k in ("base", "objects", "bytes", "stored_objects", "stored_bytes",
                                                             "repositories")}
        return doc

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def anomaly(self, now: datetime | None = None) -> str | None:
        """Why the backup's times cannot be trusted, if they cannot: completed before it
        started, or named more than a day in the future (a clock was wrong). Retention
        counts such a backup as no keeper (dss ignores them likewise)."""
        now = now or datetime.now(timezone.utc)
        try:
            started, completed = datetime.fromisoformat(self.started), datetime.fromisoformat(self.completed)
            if completed < started:
                return f"completed ({self.completed}) before it started ({self.started})"
        except (TypeError, ValueError):
            return "start or completion time is malformed"
        if names.parse_timestamp(self.timestamp) > now + names.FUTURE_SLACK:
            return f"its time {self.timestamp} lies more than a day in the future"
        return None

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "BackupMeta":
        """Parse and type-check every field, here only: whatever reads a BackupMeta (list, verify,
        the mount, the next backup) may rely on the types the dataclass declares."""
        doc = parse_json(data, where)
        check_version(doc, BACKUP_VERSION, where, oldest=1)
        try:
            meta = cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})
            names.timestamp(meta.timestamp)
            if meta.kind not in KINDS:
                raise ValueError(f"unknown kind {meta.kind!r}")
            if meta.base is not None:
                names.timestamp(meta.base)
            for key in ("started", "completed", "guest"):
                _str(getattr(meta, key))
            for key in ("release", "vm_snapshot"):
                _opt_str(getattr(meta, key))
            if not _number(meta.duration_s) or meta.duration_s < 0:
                raise TypeError(f"duration_s must be a non-negative number, not {meta.duration_s!r}")
            if not isinstance(meta.stats, dict) or not all(isinstance(k, str) and _count(v) for k, v in meta.stats.items()):
                raise TypeError("stats must map names to non-negative integers")
            if not isinstance(meta.files, dict) or not all(isinstance(k, str) for k in meta.files):
                raise TypeError("files must be an object of file records")
            if not isinstance(meta.layer, dict) or not isinstance(meta.manifest, dict):
                raise TypeError("layer and manifest must be objects")
            base_tree = meta.manifest.get("base")
            for part in (meta.layer, meta.manifest, *meta.files.values(), *([base_tree] if base_tree is not None else [])):
                if not isinstance(part, dict) or not isinstance(part.get("sha256"), str) or not _count(part.get("size")):
                    raise TypeError("layer, manifest, base tree and each file need a sha256 string and a size")
                if meta.major >= 2:  # the sha256 names the object: it becomes a path
                    names.digest(part["sha256"])
            if not isinstance(meta.warnings, list) or not all(isinstance(w, str) for w in meta.warnings):
                raise TypeError("warnings must be a list of strings")
            if meta.cvmfs is not None:
                _check_cvmfs(meta.cvmfs)
        except (TypeError, ValueError, InvalidRequest) as exc:
            raise CorruptData(f"{where}: malformed backup metadata ({exc})") from None
        return meta


def _check_cvmfs(part: Any) -> None:
    if not isinstance(part, dict):
        raise TypeError("cvmfs must be an object")
    for key in ("layer", "tree"):
        ref = part.get(key)
        if not isinstance(ref, dict) or not isinstance(ref.get("sha256"), str) or not _count(ref.get("size")):
            raise TypeError(f"cvmfs.{key} needs a sha256 string and a size")
        names.digest(ref["sha256"])
    for key in ("objects", "bytes", "stored_objects", "stored_bytes"):
        if not _count(part.get(key)):
            raise TypeError(f"cvmfs.{key} must be a non-negative integer")
    _str(part.get("base"))
    _str_list(part.get("repositories"))


def _stored_policy(doc: Any) -> "StoredPolicy":
    """An entry's keep rules; the retention module is imported only for an entry that has some
    (9 ms of every backup's start on a slow host, for entries that have none)."""
    from vmlfs.engine.retention import StoredPolicy

    return StoredPolicy.from_doc(doc)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of strings, got {type(value).__name__}")
    return [_str(v) for v in value]


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return dict(value)
