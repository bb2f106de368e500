"""A directory's names as a case-insensitive Windows volume shows them, and the way back.

Guest names go through :func:`vmlfs.fs.winnames.to_windows` first (characters
and device names Windows cannot hold). Windows then compares names without
case, so a backup holding both ``Makefile`` and ``makefile`` needs a rule to
keep every file reachable under one name. The suffix rule:

* names that collide without case are ordered by their guest bytes; the first
  keeps its name, the others get ``~2``, ``~3``, ... before the extension (or
  at the end when there is none): ``Makefile`` and ``makefile~2``,
  ``notes.txt`` and ``NOTES~2.txt``;
* a suffixed name never takes the name of another file: if ``makefile~2``
  (without case) exists in the directory, the next number is used;
* a lookup compares without case (Unicode case folding), so ``MAKEFILE``
  opens ``Makefile``; ``makefile`` does too, the file that got the suffix is
  reached only as ``makefile~2``.

The result depends only on the set of names of the directory, so it is the
same at every listing of a backup (backups never change).
"""

from __future__ import annotations

from vmlfs.fs.winnames import to_windows


def fold(name: str) -> str:
    return name.casefold()


def suffixed(name: str, n: int) -> str:
    stem, dot, ext = name.rpartition(".")
    if dot and stem:
        return f"{stem}~{n}.{ext}"
    return f"{name}~{n}"


def windows_names(raw: list[bytes]) -> dict[bytes, str]:
    """Guest name -> the unique (without case) name Windows is shown, for one directory."""
    shown = {name: to_windows(name) for name in raw}
    groups: dict[str, list[bytes]] = {}
    for name in sorted(raw):
        groups.setdefault(fold(shown[name]), []).append(name)
    taken = set(groups)
    for members in groups.values():
        for name in members[1:]:
            n = 2
            while fold(candidate := suffixed(shown[name], n)) in taken:
                n += 1
            taken.add(fold(candidate))
            shown[name] = candidate
    return shown
