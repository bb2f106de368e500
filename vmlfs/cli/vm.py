"""``vmlfs vm ...``: libvirt domains and their snapshots.

Thin: the group's options make the session's libvirt connection, and each
command calls one function of :mod:`vmlfs.app.vm`; errors propagate to the
one boundary in :mod:`vmlfs.cli.main`.
"""

from __future__ import annotations

import click

from vmlfs.app import vm as vm_app
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, libvirt_options, pass_context

@cli.group("vm")
@libvirt_options
@pass_context
def vm(ctx: Context, libvirt_uri: str, insecure: bool) -> None:
    """libvirt domains and their snapshots (any driver: QEMU/KVM, Xen, ESX, test)."""
    ctx.session(libvirt_uri=libvirt_uri, insecure=insecure)  # the subcommands' session


@vm.command("list")
@pass_context
def list_cmd(ctx: Context) -> None:
    """List the domains, their state and how many snapshots each has."""
    domains = vm_app.domains(ctx.session())
    if not domains:
        click.echo("no domains")
        return
    width = max(4, *(len(d.name) for d in domains))
    click.echo(f"{'NAME':<{width}}  {'STATE':<12}  SNAPSHOTS")
    for dom in domains:
        count = "-" if dom.snapshots is None else str(dom.snapshots)
        click.echo(f"{dom.name:<{width}}  {dom.state:<12}  {count}")


@vm.command("snapshot")
@click.argument("domain")
@click.option("--name", "name", metavar="N", help="Snapshot name [default: vmlfs-<UTC timestamp>].")
@click.option("--description", metavar="D", default="", help="Free text stored with the snapshot.")
@click.option("--disk-only", is_flag=True, help="Disks only, no memory state (VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY).")
@click.option("--quiesce", is_flag=True, help="Freeze guest file systems through the guest agent (_QUIESCE).")
@click.option("--halt", is_flag=True, help="Stop the domain after the snapshot (_HALT).")
@click.option("--atomic", is_flag=True, help="All disks or none (_ATOMIC).")
@pass_context
def snapshot_cmd(
    ctx: Context, domain: str, name: str | None, description: str, disk_only: bool, quiesce: bool, halt: bool, atomic: bool
) -> None:
    """Take a snapshot of DOMAIN."""
    snap = vm_app.take_vm_snapshot(ctx.session(), domain, description, name, disk_only=disk_only, quiesce=quiesce,
                                   halt=halt, atomic=atomic)
    click.echo(f"created snapshot {snap.name!r} of domain {domain!r} ({snap.state})")


@vm.command("snapshots")
@click.argument("domain")
@pass_context
def snapshots_cmd(ctx: Context, domain: str) -> None:
    """Show DOMAIN's snapshots as a tree: parent and children, current marked *, creation time (UTC)."""
    click.echo(vm_app.snapshot_tree(ctx.session(), domain), nl=False)


@vm.command("revert")
@click.argument("domain")
@click.argument("snapshot")
@click.option("--running", is_flag=True, help="Run the domain after reverting (VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING).")
@click.option("--paused", is_flag=True, help="Leave the domain paused after reverting (_PAUSED).")
@click.option("--force", is_flag=True, help="Allow reverts libvirt considers risky (_FORCE).")
@pass_context
def revert_cmd(ctx: Context, domain: str, snapshot: str, running: bool, paused: bool, force: bool) -> None:
    """Revert DOMAIN to SNAPSHOT."""
    state = vm_app.revert_vm_snapshot(ctx.session(), domain, snapshot, running=running, paused=paused, force=force)
    click.echo(f"reverted domain {domain!r} to snapshot {snapshot!r}; it is now {state}")


@vm.command("delete")
@click.argument("domain")
@click.argument("snapshot")
@click.option("--children", is_flag=True, help="Also delete its descendants (VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN).")
@click.option("--children-only", is_flag=True, help="Delete only its descendants (_CHILDREN_ONLY).")
@click.option("--metadata-only", is_flag=True, help="Forget libvirt's record, keep the disk data (_METADATA_ONLY).")
@pass_context
def delete_cmd(
    ctx: Context, domain: str, snapshot: str, children: bool, children_only: bool, metadata_only: bool
) -> None:
    """Delete SNAPSHOT of DOMAIN."""
    deleted = vm_app.delete_vm_snapshot(ctx.session(), domain, snapshot, children=children, children_only=children_only,
                                        metadata_only=metadata_only)
    what = ", ".join(repr(n) for n in deleted) if deleted else "nothing (no descendants)"
    suffix = " (metadata only; disk data kept)" if metadata_only and deleted else ""
    click.echo(f"deleted {what} of domain {domain!r}{suffix}")
