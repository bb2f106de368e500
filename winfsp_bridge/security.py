"""The one rule from a guest node's mode and owner to a Windows security descriptor (SDDL).

* Owner and group are the guest's uid and gid as Samba names unmapped Unix
  accounts: ``S-1-22-1-<uid>`` ("Unix User\\<uid>") and ``S-1-22-2-<gid>``
  ("Unix Group\\<gid>"), so Explorer's Security tab shows who owned the file
  on the guest.
* The DACL is protected (``P``: nothing inherited) and grants, from the
  permission bits: to the owner SID the owner bits, to the group SID the
  group bits, to Everyone (``WD``) the other bits, and to the reader the
  owner bits: by default the interactive users (``IU``, whoever is logged on
  at the machine), as a user reads the backups of their own guest on Linux.
* ``r`` is read (``FILE_GENERIC_READ``: data, attributes, extended
  attributes, the descriptor; on a directory, listing), ``x`` is execute
  (``FILE_GENERIC_EXECUTE``: run, or traverse a directory). Write bits grant
  nothing: the volume is read-only.
* An ACE with no rights is left out.
"""

from __future__ import annotations

FILE_GENERIC_READ = 0x120089
FILE_GENERIC_EXECUTE = 0x1200A0
BRIDGE_USER = "IU"  # interactive users: whoever is logged on at the machine the drive is mounted on


def rights(bits: int) -> int:
    """Access mask of one rwx triple (only r and x count)."""
    return (FILE_GENERIC_READ if bits & 4 else 0) | (FILE_GENERIC_EXECUTE if bits & 1 else 0)


def sddl(mode: int, uid: int, gid: int, reader: str = BRIDGE_USER) -> str:
    owner, group = f"S-1-22-1-{uid}", f"S-1-22-2-{gid}"
    aces = [(rights(mode >> 6), owner), (rights(mode >> 3), group), (rights(mode), "WD"), (rights(mode >> 6), reader)]
    dacl = "".join(f"(A;;{mask:#x};;;{sid})" for mask, sid in aces if mask)
    return f"O:{owner}G:{group}D:P{dacl}"
