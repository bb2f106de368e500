"""``python -m winfsp_bridge MOUNTPOINT [--store PATH]``: every backup of a store as a read-only Windows drive.

Runs on Windows with WinFsp and ``pip install "vmlfs[windows]"`` (docs/windows.md).
The tree is the mount's, built from a session as ``vmlfs mount`` builds it;
Ctrl-C unmounts. Elsewhere it says so and exits with status 2: Linux and
macOS have ``vmlfs mount`` and ``vmlfs serve``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from vmlfs.app.session import Session
from vmlfs.archive.seekable import FrameCache
from vmlfs.backends.local_store import default_store_path
from vmlfs.errors import VmlfsError
from vmlfs.fs.control import Jobs
from vmlfs.fs.state import MountState
from winfsp_bridge.bridge import Bridge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m winfsp_bridge", description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint", help="a free drive letter (X:) or an empty directory")
    parser.add_argument("--store", default=None, help="store directory or ssh://... (default: $VMLFS_STORE, else vmlfs's default store)")
    parser.add_argument("--cache-size", type=int, default=64, metavar="MIB", help="memory for decompressed frames")
    parser.add_argument("--label", default="vmlfs", help="the volume label Explorer shows")
    args = parser.parse_args(argv)
    if sys.platform != "win32":
        print("winfsp_bridge: WinFsp exists on Windows only; here use 'vmlfs mount' or 'vmlfs serve'", file=sys.stderr)
        return 2
    from winfsp_bridge.adapter import mount

    try:
        session = Session(args.store or os.environ.get("VMLFS_STORE") or default_store_path(),
                          frame_cache=FrameCache(args.cache_size << 20), shared_store=True)
        state = MountState(session.store(create=False), Jobs(session))
        fs = mount(Bridge(state, label=args.label), args.mountpoint)
    except VmlfsError as exc:
        print(f"winfsp_bridge: error: {exc.message}", file=sys.stderr)
        return 1
    print(f"winfsp_bridge: {args.mountpoint} serves the store read-only; Ctrl-C unmounts", file=sys.stderr)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fs.stop()
        state.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
