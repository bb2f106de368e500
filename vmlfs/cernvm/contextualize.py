"""First-boot configuration of a provisioned CernVM: our SSH key in, a host key we already know.

CernVM 3/4/5 run cloud-init with the ConfigDrive datasource, and the µCernVM
bootloader looks for an ISO9660 volume holding ``openstack/latest/user_data``
(docs/cernvm-facts.md §4.1, §4.2); cernvm-launch (libcernvm) attaches exactly such an ISO,
labelled ``CONFIG-2``, with the same user-data under ``ec2/latest/`` too. We
build that ISO in Python (pycdlib), so provisioning needs no genisoimage.

The user-data is a ``#cloud-config`` document (written as JSON, which is
YAML) that installs the user's public key for root (CernVM has no default
user; ``disable_root: false``) and *sets the guest's SSH host key* to one we
generated. vmlfs then trusts exactly that key for the new guest, with no
trust-on-first-use window. A CernVM image has no account for the physicist
either, so for a backup of a non-root home the document also creates that
account (:class:`Account`: the uid, gid and shell the backup recorded) with
the same key: the home is then restored by, and owned by, its user.
"""

from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pycdlib
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vmlfs.cernvm import environment
from vmlfs.errors import InvalidRequest, NotFound

LABEL = "CONFIG-2"
USER_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


def user_public_key(home: str | None = None) -> str:
    """The first of ``~/.ssh/id_{ed25519,ecdsa,rsa}.pub``: the key the SSH client will log in with."""
    ssh_dir = Path(home or os.path.expanduser("~")) / ".ssh"
    for name in USER_KEYS:
        path = ssh_dir / name
        if path.is_file():
            key = path.read_text(encoding="utf-8", errors="replace").strip()
            if key.startswith(("ssh-", "ecdsa-")) and "\n" not in key:
                return key
            raise InvalidRequest(f"{path} is not one OpenSSH public key line")
    raise NotFound(f"no SSH public key in {ssh_dir} ({', '.join(USER_KEYS)})",
                   hint="create one with 'ssh-keygen -t ed25519'; it is what the new guest will accept")


def new_host_key() -> tuple[str, str]:
    """A fresh ed25519 host key pair: (private key in OpenSSH PEM, public key line).

    Only the ConfigDrive carries the private key; vmlfs keeps the public one
    (in known_hosts), which is all it needs to recognise the guest.
    """
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


@dataclass(frozen=True)
class Account:
    """The guest user a backup belongs to, as the backup recorded it (owner of the home, login shell)."""

    name: str
    uid: int
    gid: int
    group: str
    shell: str
    home: str


def _account_config(account: Account, authorized_key: str) -> dict:
    """cloud-init's ``users`` entry for ``account``, and a ``bootcmd`` making its group first.

    cloud-init's users module passes ``primary_group`` to ``useradd --gid``,
    which needs the group to exist; ``bootcmd`` runs before it, and creates
    the group with the recorded gid only where no group has that gid.
    """
    group = f"getent group {account.gid} >/dev/null || groupadd -g {account.gid} {account.group}"
    return {
        "bootcmd": [["cloud-init-per", "once", "vmlfs-group", "sh", "-c", group]],
        "users": [{"name": account.name, "uid": str(account.uid), "primary_group": str(account.gid),
                   "shell": account.shell, "homedir": account.home, "lock_passwd": True,
                   "ssh_authorized_keys": [authorized_key]}],
    }


def user_data(hostname: str, authorized_key: str, host_private: str, host_public: str,
              account: Account | None = None, profile: bytes | None = None) -> bytes:
    """The ``#cloud-config`` user-data: root (and ``account``, if given) may log in with
    ``authorized_key``; the host key is ours; ``profile``, if given, is written as the login-shell
    script that applies the backup's environment (:mod:`vmlfs.cernvm.environment`)."""
    doc = {
        "hostname": hostname,
        "disable_root": False,
        "ssh_authorized_keys": [authorized_key],
        "ssh_deletekeys": True,
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
    }
    if account is not None and account.uid != 0:
        doc.update(_account_config(account, authorized_key))
    if profile is not None:  # base64: env.txt's values are bytes, and may hold anything but NUL
        doc["write_files"] = [{"path": environment.PROFILE_PATH, "encoding": "b64", "owner": "root:root",
                               "permissions": "0644", "content": base64.b64encode(profile).decode()}]
    return b"#cloud-config\n" + json.dumps(doc, indent=1).encode() + b"\n"


def write_config_drive(path: Path, hostname: str, uuid: str, data: bytes, authorized_key: str) -> None:
    """The ConfigDrive ISO (label ``CONFIG-2``) with ``data`` as OpenStack and EC2 user-data."""
    meta = json.dumps({"uuid": uuid, "hostname": hostname, "name": hostname,
                       "public_keys": {"vmlfs": authorized_key}}).encode()
    files = {
        "openstack/latest/user_data": data,
        "openstack/latest/meta_data.json": meta,
        "ec2/latest/user-data": data,
        "ec2/latest/meta-data.json": b"{}",
        "readme": b"Contextualization for a CernVM provisioned by vmlfs.\n",
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", joliet=3, vol_ident=LABEL)
    dirs: set[str] = set()
    for count, (rel, content) in enumerate(sorted(files.items())):
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            sub = "/".join(parts[:depth])
            if sub not in dirs:
                dirs.add(sub)
                iso.add_directory(_iso_path(parts[:depth], count, directory=True), rr_name=parts[depth - 1],
                                  joliet_path="/" + sub)
        iso.add_fp(io.BytesIO(content), len(content), _iso_path(parts, count), rr_name=parts[-1], joliet_path="/" + rel)
    iso.write(str(path))
    iso.close()


def _iso_path(parts: list[str], count: int, *, directory: bool = False) -> str:
    """An ISO9660 level-3 name for each component (upper case, d-characters); readers use the Rock Ridge names."""
    def clean(name: str) -> str:
        return "".join(c if c.isalnum() else "_" for c in name.upper())[:30]
    names = [clean(p) for p in parts]
    if not directory:
        names[-1] = f"{names[-1][:24]}{count}.;1"
    return "/" + "/".join(names)


def read_config_drive(path: Path) -> dict[str, bytes]:
    """The files of a ConfigDrive ISO by Rock Ridge path (what a guest sees): for checks and tests."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out: dict[str, bytes] = {}
        for root, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                buf = io.BytesIO()
                rr = f"{root.rstrip('/')}/{name}"
                iso.get_file_from_iso_fp(buf, rr_path=rr)
                out[rr.lstrip("/")] = buf.getvalue()
        return out
    finally:
        iso.close()
