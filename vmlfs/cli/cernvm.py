"""``vmlfs cernvm list|fetch``: CernVM releases on this host and in the release repository.

Thin by design: each command calls :mod:`vmlfs.cernvm.images` and prints;
errors propagate as :class:`~vmlfs.errors.VmlfsError` to ``vmlfs.cli.main``.
"""

from __future__ import annotations

import click

from vmlfs.cernvm import images
from vmlfs.cernvm.catalog import FORMATS
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, pass_context

repo_option = click.option(
    "--repo", metavar="URL", envvar="VMLFS_CERNVM_REPO",
    help=f"Release repository [env VMLFS_CERNVM_REPO; default {images.DEFAULT_REPO}].",
)


@cli.group()
def cernvm() -> None:
    """CernVM releases: local images and the release repository."""


@cernvm.command("list")
@click.option("--remote", is_flag=True, help="Also list the releases the repository offers.")
@repo_option
def list_(remote: bool, repo: str | None) -> None:
    """Show CernVM images in the local image directories (and, with --remote, the repository's releases).

    Example: vmlfs cernvm list --remote
    """
    local = images.local_images()
    click.echo(f"local images ({', '.join(str(d) for d in images.image_dirs())}):")
    for image in sorted(local, key=lambda i: i.version, reverse=True):
        check = "sha256" if image.sha256 else "-"
        click.echo(f"  {image.version!s:<20} {image.arch:<8} {image.format:<7} {check:<7} {image.path}")
    if not local:
        click.echo("  (none)")
    if not remote:
        return
    url = images.repo_url(repo)
    with images.new_client() as client:
        found = images.Repository(url, client).catalog()
    have = {(i.version, i.arch) for i in local}
    click.echo(f"releases in {url}:")
    for release in found.releases:
        marks = [m for m, on in (("latest", release.version == found.latest), (release.channel or "", True),
                                 ("local", (release.version, release.arch) in have)) if on and m]
        formats = " ".join(f.format for f in release.files)
        click.echo(f"  {release.version!s:<20} {release.arch:<8} {formats:<20} {' '.join(marks)}".rstrip())
    if not found.releases:
        click.echo("  (none)")


@cernvm.command()
@click.argument("version")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Image format [default: the best available for libvirt].")
@click.option("--arch", default="x86_64", show_default=True, help="Architecture.")
@repo_option
@pass_context
def fetch(ctx: Context, version: str, fmt: str | None, arch: str, repo: str | None) -> None:
    """Find CernVM VERSION locally, or download and verify it into the cache; print its path.

    Example: vmlfs cernvm fetch 2021.05-1 --format qcow2
    """
    result = images.fetch(version, repo=repo, fmt=fmt, arch=arch, progress=ctx.show_progress)
    how = "found locally" if result.source == "local" else "downloaded"
    check = "sha256 verified" if result.verified else "not verified (no checksum available)"
    if not ctx.quiet:
        click.echo(f"CernVM {result.release.version} ({result.release.arch}): {how}, {check}", err=True)
    click.echo(str(result.path))
