"""Generate the deterministic benchmark tree (../shared/PERFORMANCE.md's dataset).

Default: 20,000 small files of 100 B-64 KiB (70 % text-like, the rest random
bytes) in nested directories, plus three big files of 60-100 MiB (mixed
compressible and random content). The same seed gives the same tree, byte for
byte, so peers are measured on identical data within one run.

    python bench/tree.py DIR [--files N] [--big N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random

WORDS = (
    "event track vertex jet muon electron photon hist branch tree entry cut weight lumi run "
    "analysis trigger selection fit mass energy momentum eta phi pt chi2 ndf sigma background signal"
).split()


def _text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        out += f"{line} = {rng.random():.6f}\n".encode()
    return bytes(out[:size])


def _binary(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def generate(root: str, files: int = 20_000, big: int = 3, seed: int = 42, big_mib: tuple[int, int] = (60, 100)) -> int:
    """Write the tree below ``root``; return the total bytes written."""
    rng = random.Random(seed)
    total = 0
    dirs = max(1, files // 100)
    for i in range(files):
        d = os.path.join(root, f"d{i % dirs // 10:03d}", f"s{i % dirs:04d}")
        os.makedirs(d, exist_ok=True)
        size = int(100 * (64 * 1024 / 100) ** rng.random())  # log-uniform 100 B .. 64 KiB
        data = _text(rng, size) if rng.random() < 0.7 else _binary(rng, size)
        with open(os.path.join(d, f"f{i:06d}.{'txt' if data[:1].isalpha() else 'bin'}"), "wb") as f:
            f.write(data)
        total += size
    os.makedirs(os.path.join(root, "big"), exist_ok=True)
    for i in range(big):
        size = rng.randint(*big_mib) << 20
        with open(os.path.join(root, "big", f"big{i}.root"), "wb") as f:
            block = 4 << 20
            for pos in range(0, size, block):
                n = min(block, size - pos)
                f.write(_text(rng, n) if (pos // block) % 2 else _binary(rng, n))
        total += size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    total = generate(args.dir, args.files, args.big, args.seed)
    print(f"{args.files + args.big} files, {total / 2**20:.0f} MiB in {args.dir}")


if __name__ == "__main__":
    main()
