"""Progress shown on a terminal with tqdm; nothing when quiet or not a TTY.

tqdm is imported only when a bar is drawn: it costs ~20 ms of start-up, a
third of a no-change backup's budget.
"""

from __future__ import annotations

from typing import Any


class _NoBar:
    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(leave=False, **kwargs)


class BackupProgress:
    """Scanned entries, then packed files and bytes with a rate."""

    def __init__(self, enabled: bool) -> None:
        self._scan = _bar(enabled, desc="scanned", unit=" entries")
        self._bytes = _bar(enabled, desc="packed", unit="B", unit_scale=True, unit_divisor=1024)
        self._files = 0

    def scanned(self, count: int) -> None:
        self._scan.update(count - self._scan.n)

    def packed(self, files: int, nbytes: int) -> None:
        self._files += files
        self._bytes.set_postfix_str(f"{self._files} files", refresh=False)
        self._bytes.update(nbytes)

    def close(self) -> None:
        self._scan.close()
        self._bytes.close()


def byte_bar(enabled: bool, desc: str, total: int | None = None) -> Any:
    return _bar(enabled, desc=desc, total=total, unit="B", unit_scale=True, unit_divisor=1024)
