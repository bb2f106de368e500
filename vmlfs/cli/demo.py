"""``vmlfs demo``: the main job on the embedded default (a local store and a generated guest)."""

from __future__ import annotations

import shlex

import click

from vmlfs.cli import humanize
from vmlfs.cli.main import cli
from vmlfs.app.demo import ENTRY, run_demo


@cli.command()
@click.option("--dir", "directory", default="vmlfs-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where to put the demo guest home and store (recreated each run).")
def demo(directory: str) -> None:
    """Generate a demo guest home, back it up twice, and show what to look at.

    Example: vmlfs demo --dir /tmp/vmlfs-demo
    """
    store, backups = run_demo(directory)
    s = shlex.quote(str(store))
    click.echo(f"demo store: {store}")
    for meta in backups:
        click.echo(
            f"  {ENTRY}@{meta.timestamp}: {meta.kind}, {meta.stats['files']} files, packed {meta.stats['packed_files']},"
            f" stored {humanize.size(meta.layer['size'])} in {humanize.duration(meta.duration_s)}"
        )
    first, second = backups[0].timestamp, backups[1].timestamp
    click.echo(
        "\nnow try:\n"
        f"  vmlfs --store {s} list {ENTRY}\n"
        f"  vmlfs --store {s} ls {ENTRY}@{first} analysis      # run007.csv is still there\n"
        f"  vmlfs --store {s} ls {ENTRY}@{second} analysis     # ...and gone here; notes.txt is new\n"
        f"  vmlfs --store {s} restore {ENTRY}@{first} /tmp/restored\n"
        f"  vmlfs --store {s} verify\n"
        f"  mkdir -p /tmp/logbook && vmlfs --store {s} mount /tmp/logbook && ls /tmp/logbook/entries/{ENTRY}   # then: vmlfs umount /tmp/logbook\n"
        f"  tar --zstd -tvf {s}/objects/layers/{backups[1].layer['sha256']}.tar.zst"
    )
