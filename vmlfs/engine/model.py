"""The JSON documents of a store: store header, entry config, backup metadata.

Each document carries a ``version``; readers refuse an unknown major version
and treat malformed content as :class:`CorruptData` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from vmlfs import names
from vmlfs.errors import CorruptData, InvalidRequest, UnsupportedVersion

STORE_VERSION = "1.0"
ENTRY_VERSION = "1.1"  # 1.1: backup defaults ("backup": {...}); 1.0 readers ignore them
BACKUP_VERSION = "1.0"
KINDS = ("full", "incremental", "differential")


def check_version(doc: dict[str, Any], expected: str, where: str) -> None:
    version = doc.get("version")
    if not isinstance(version, str) or not version.split(".")[0].isdigit():
        raise CorruptData(f"{where}: missing or malformed version")
    if version.split(".")[0] != expected.split(".")[0]:
        raise UnsupportedVersion(
            f"{where}: format version {version} is newer than this vmlfs understands ({expected})",
            hint="upgrade vmlfs to read this store",
        )


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

    def to_json(self) -> bytes:
        return dump_json({"format": "vmlfs-entry", "version": ENTRY_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "EntryConfig":
        doc = parse_json(data, where)
        check_version(doc, ENTRY_VERSION, where)
        try:
            cfg = cls(
                name=names.entry_name(doc["name"]),
                guest=_str(doc["guest"]),
                include=[_str(p) for p in doc.get("include", [])],
                exclude=[_str(p) for p in doc.get("exclude", [])],
                release=_opt_str(doc.get("release")),
                domain=_opt_str(doc.get("domain")),
                env_file=_opt_str(doc.get("env_file")),
                vm=dict(doc.get("vm") or {}),
                backup=BackupDefaults.from_doc(doc.get("backup", {})),
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

    def to_json(self) -> bytes:
        return dump_json({"format": "vmlfs-backup", "version": BACKUP_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "BackupMeta":
        doc = parse_json(data, where)
        check_version(doc, BACKUP_VERSION, where)
        try:
            meta = cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})
            names.timestamp(meta.timestamp)
            if meta.kind not in KINDS:
                raise ValueError(f"unknown kind {meta.kind!r}")
            if meta.base is not None:
                names.timestamp(meta.base)
            if not isinstance(meta.stats, dict) or not isinstance(meta.layer, dict) or not isinstance(meta.manifest, dict):
                raise TypeError("stats, layer and manifest must be objects")
            for part in (meta.layer, meta.manifest, *meta.files.values()):
                if not isinstance(part.get("sha256"), str) or not isinstance(part.get("size"), int):
                    raise TypeError("a file record lacks its sha256 or size")
        except (TypeError, ValueError, InvalidRequest) as exc:
            raise CorruptData(f"{where}: malformed backup metadata ({exc})") from None
        return meta


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)
