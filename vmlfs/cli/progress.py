"""Progress shown on a terminal with tqdm; nothing when quiet or not a TTY."""

from __future__ import annotations

from tqdm import tqdm


class BackupProgress:
    """Scanned entries, then packed files and bytes with a rate."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._scan = tqdm(desc="scanned", unit=" entries", disable=not enabled, leave=False)
        self._bytes = tqdm(desc="packed", unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled, leave=False)
        self._files = 0

    def scanned(self, count: int) -> None:
        if self.enabled:
            self._scan.update(count - self._scan.n)

    def packed(self, files: int, nbytes: int) -> None:
        if not self.enabled:
            return
        self._files += files
        self._bytes.set_postfix_str(f"{self._files} files", refresh=False)
        self._bytes.update(nbytes)

    def close(self) -> None:
        self._scan.close()
        self._bytes.close()


def byte_bar(enabled: bool, desc: str, total: int | None = None) -> tqdm:
    return tqdm(desc=desc, total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled, leave=False)
