"""``vmlfs provision``: a new libvirt domain on an entry's CernVM release, with its environment restored."""

from __future__ import annotations

import click

from vmlfs.app import provision as prov
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, libvirt_options, pass_context


@cli.command()
@click.argument("target", metavar="NAME[@TS]|RELEASE")
@libvirt_options
@click.option("--strict-release", is_flag=True, help="Refuse to restore when the guest's release differs from the backup's.")
@click.option("--repo", metavar="URL", help="CernVM release repository [env VMLFS_CERNVM_REPO].")
@click.option("--ssh-timeout", type=click.FloatRange(1, 3600), default=prov.SSH_TIMEOUT, show_default=True,
              metavar="SECONDS", help="How long to wait for the new guest's SSH.")
@click.option("--domain", metavar="NAME", help="Name of the new domain [the entry's domain, else the entry's name].")
@click.option("--as-new-entry", metavar="NAME", help="Record the new guest as a new entry NAME (a copy of the entry's "
              "settings) instead of pointing the entry itself at it.")
@click.option("--with-cvmfs-cache/--without-cvmfs-cache", "cvmfs_cache", default=None,
              help="Put the backup's CernVM-FS cache into the new VM (as root, before CernVM-FS mounts) [if the backup has one].")
@pass_context
def provision(ctx: Context, target: str, libvirt_uri: str, insecure: bool, strict_release: bool, repo: str | None,
              ssh_timeout: float, domain: str | None, as_new_entry: str | None, cvmfs_cache: bool | None) -> None:
    """Fetch the entry's release, define and start a domain, wait for SSH, restore the backup into it.

    NAME is an entry (its newest backup), NAME@TS one of its backups (a unique
    prefix of TS will do), RELEASE a bare CernVM release (a fresh domain
    cernvm-RELEASE, nothing restored). Afterwards the entry backs up the new
    guest (or, with --as-new-entry, the new entry does), and the guest's host
    key is in ~/.ssh/known_hosts.

    Example: vmlfs provision higgs@20261122 --libvirt-uri qemu:///system
    """
    session = ctx.session(libvirt_uri=libvirt_uri, insecure=insecure, image_repo=repo)
    say = (lambda line: None) if ctx.quiet else (lambda line: click.echo(f"vmlfs: {line}", err=True))
    done = prov.provision(session, prov.plan(session.store(), target, domain or as_new_entry),
                          strict_release=strict_release, ssh_timeout=ssh_timeout, report=say, as_new_entry=as_new_entry,
                          with_cvmfs_cache=cvmfs_cache)
    click.echo(f"{done.domain} {done.address}")
    if done.recorded:
        click.echo(done.recorded)
