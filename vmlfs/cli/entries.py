"""``vmlfs entry ...``: add, list, show, remove entries and choose the default one."""

from __future__ import annotations

import click

from vmlfs import names
from vmlfs.cernvm.detect import parse_release
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, pass_context
from vmlfs.engine.model import EntryConfig


@cli.group()
def entry() -> None:
    """Manage entries (one logbook per guest environment)."""


@entry.command("add")
@click.argument("name")
@click.option("--guest", required=True, help="Guest home: a local directory or ssh://[user@]host[:port]/path.")
@click.option("--include", multiple=True, metavar="PATTERN", help="Re-include paths an --exclude left out (gitignore-style, repeatable).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave paths out (gitignore-style, relative to the guest home, repeatable).")
@click.option("--release", help="The CernVM release the guest runs.")
@click.option("--domain", help="The libvirt domain that runs the guest.")
@click.option("--env-file", type=click.Path(dir_okay=False), help="For a local guest: take env.txt from this file.")
@click.option("--vm-memory", type=click.IntRange(64, 1 << 20), metavar="MIB", help="Provisioning: memory of the domain [2048].")
@click.option("--vm-cpus", type=click.IntRange(1, 256), metavar="N", help="Provisioning: virtual CPUs [1].")
@click.option("--vm-network", type=click.Choice(["nat", "user", "none"]), help="Provisioning: libvirt network 'default' (nat), QEMU user networking, or none [nat].")
@click.option("--vm-ssh", metavar="HOST:PORT", help="Provisioning: where the new guest's sshd answers (e.g. a port forward) [from libvirt's DHCP leases, port 22].")
@pass_context
def add(ctx: Context, name: str, guest: str, include: tuple[str, ...], exclude: tuple[str, ...],
        release: str | None, domain: str | None, env_file: str | None, vm_memory: int | None, vm_cpus: int | None,
        vm_network: str | None, vm_ssh: str | None) -> None:
    """Add entry NAME backing up GUEST."""
    if release is not None:
        parse_release(release)
    if domain is not None:
        from vmlfs.hypervisor.domain_xml import domain_name

        domain_name(domain)  # it names the disk directory when provisioning
    vm = {k: v for k, v in (("memory", vm_memory), ("cpus", vm_cpus), ("network", vm_network), ("ssh", vm_ssh)) if v is not None}
    if vm_ssh is not None:
        from vmlfs.cernvm.provision import ssh_endpoint

        ssh_endpoint(vm_ssh)
    cfg = EntryConfig(names.entry_name(name), guest, list(include), list(exclude), release, domain, env_file, vm)
    ctx.store().add_entry(cfg)
    click.echo(f"added entry {name} ({guest})")


@entry.command("list")
@pass_context
def list_entries(ctx: Context) -> None:
    """List entries, with their guest and number of backups."""
    store = ctx.store()
    default = store.default_entry()
    for name in store.entry_names():
        cfg = store.load_entry(name)
        mark = "*" if name == default else " "
        click.echo(f"{mark} {name:<24} {len(store.backups(name)):>4} backups  {cfg.guest}")


@entry.command("show")
@click.argument("name")
@pass_context
def show(ctx: Context, name: str) -> None:
    """Show an entry's configuration."""
    click.echo(ctx.store().load_entry(name).to_json().decode(), nl=False)


@entry.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@pass_context
def remove(ctx: Context, name: str, yes: bool) -> None:
    """Remove an entry and ALL its backups."""
    store = ctx.store()
    count = len(store.backups(name))
    if not yes:
        click.confirm(f"remove entry {name} and its {count} backups?", abort=True)
    store.remove_entry(name)
    click.echo(f"removed entry {name}")


@entry.command("default")
@click.argument("name")
@pass_context
def default(ctx: Context, name: str) -> None:
    """Make NAME the entry that /control/snapshot acts on."""
    ctx.store().set_default_entry(name)
    click.echo(f"default entry: {name}")
