"""Include/exclude rules, gitignore-style, relative to the guest home.

Excludes are gitignore lines; includes are re-inclusions (gitignore's ``!``)
applied after them, so ``--exclude '*.root' --include 'keep.root'`` keeps
one file. As in git, a file inside an excluded directory cannot be
re-included: the directory is never descended into. Matching is done by
``pathspec`` (the library git-aware tools use), not by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Rules:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @cached_property
    def _spec(self):
        """Compiled at the first match: pathspec costs 8 ms to import, which rules built at import
        time (the CernVM-FS cache's) must not add to every run of the CLI."""
        import pathspec

        return pathspec.GitIgnoreSpec.from_lines(list(self.exclude) + ["!" + p for p in self.include])

    def excluded(self, path: bytes, is_dir: bool) -> bool:
        """Whether a relative path (bytes, no leading slash) is left out."""
        if not self.exclude or not path:
            return False
        text = path.decode("utf-8", "surrogateescape") + ("/" if is_dir else "")
        return self._spec.match_file(text)
