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
    """List the domains, their state and how many snapshots each has.

    Example: vmlfs vm --libvirt-uri qemu:///system list
    """
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
@click.option("--no-metadata", is_flag=True, help="libvirt keeps no record of it; see 'vm redefine' (_NO_METADATA).")
@click.option("--reuse-ext", is_flag=True, help="Disk-only: write into existing external files (_REUSE_EXT).")
@pass_context
def snapshot_cmd(
    ctx: Context, domain: str, name: str | None, description: str, disk_only: bool, quiesce: bool, halt: bool, atomic: bool,
    no_metadata: bool, reuse_ext: bool,
) -> None:
    """Take a snapshot of DOMAIN.

    Example: vmlfs vm snapshot cernvm-higgs --name before-upgrade --description "ROOT 6.30 works"
    """
    snap = vm_app.take_vm_snapshot(ctx.session(), domain, description, name, disk_only=disk_only, quiesce=quiesce,
                                   halt=halt, atomic=atomic, no_metadata=no_metadata, reuse_ext=reuse_ext)
    click.echo(f"created snapshot {snap.name!r} of domain {domain!r} ({snap.state})")


@vm.command("snapshots")
@click.argument("domain")
@click.option("--roots", "filters", flag_value="roots", multiple=True, help="Only snapshots without a parent (_LIST_ROOTS).")
@click.option("--leaves", "filters", flag_value="leaves", multiple=True, help="Only snapshots without children (_LIST_LEAVES).")
@click.option("--no-leaves", "filters", flag_value="no_leaves", multiple=True, help="Only snapshots with children (_LIST_NO_LEAVES).")
@click.option("--metadata", "filters", flag_value="metadata", multiple=True, help="Only snapshots libvirt keeps a record of (_LIST_METADATA).")
@click.option("--external", "filters", flag_value="external", multiple=True, help="Only external snapshots (_LIST_EXTERNAL).")
@click.option("--internal", "filters", flag_value="internal", multiple=True, help="Only internal snapshots (_LIST_INTERNAL).")
@click.option("--descendants", metavar="SNAPSHOT", help="Only the descendants of SNAPSHOT ('current': of the current one).")
@pass_context
def snapshots_cmd(ctx: Context, domain: str, filters: tuple[str, ...], descendants: str | None) -> None:
    """Show DOMAIN's snapshots as a tree: parent and children, current marked *, creation time (UTC).

    Example: vmlfs vm snapshots cernvm-higgs --descendants current
    """
    click.echo(vm_app.snapshot_tree(ctx.session(), domain, *filters, descendants_of=descendants), nl=False)


@vm.command("show")
@click.argument("domain")
@click.argument("snapshot")
@click.option("--xml", "as_xml", is_flag=True, help="Print libvirt's XML description (what 'vm redefine' takes).")
@pass_context
def show_cmd(ctx: Context, domain: str, snapshot: str, as_xml: bool) -> None:
    """Show SNAPSHOT of DOMAIN: its parent and children (or its XML).

    Example: vmlfs vm show cernvm-higgs vmlfs-20261122T101500Z --xml > snap.xml
    """
    parent, children, xml = vm_app.vm_snapshot_details(ctx.session(), domain, snapshot)
    if as_xml:
        click.echo(xml, nl=not xml.endswith("\n"))
        return
    click.echo(f"snapshot: {snapshot}\nparent:   {parent or '-'}\nchildren: {', '.join(children) or '-'}")


@vm.command("redefine")
@click.argument("domain")
@click.argument("xml_file", type=click.File("rb"))
@click.option("--current", is_flag=True, help="Make it the current snapshot (_CREATE_CURRENT).")
@pass_context
def redefine_cmd(ctx: Context, domain: str, xml_file, current: bool) -> None:
    """Give libvirt back the record of a snapshot of DOMAIN from its XML (_CREATE_REDEFINE).

    Example: vmlfs vm redefine cernvm-higgs snap.xml --current
    """
    snap = vm_app.redefine_vm_snapshot(ctx.session(), domain, xml_file.read(1 << 20), current=current)
    click.echo(f"redefined snapshot {snap.name!r} of domain {domain!r}" + (" (current)" if snap.current else ""))


@vm.command("revert")
@click.argument("domain")
@click.argument("snapshot")
@click.option("--running", is_flag=True, help="Run the domain after reverting (VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING).")
@click.option("--paused", is_flag=True, help="Leave the domain paused after reverting (_PAUSED).")
@click.option("--force", is_flag=True, help="Allow reverts libvirt considers risky (_FORCE).")
@pass_context
def revert_cmd(ctx: Context, domain: str, snapshot: str, running: bool, paused: bool, force: bool) -> None:
    """Revert DOMAIN to SNAPSHOT.

    Example: vmlfs vm revert cernvm-higgs vmlfs-20261122T101500Z --running
    """
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
    """Delete SNAPSHOT of DOMAIN.

    Example: vmlfs vm delete cernvm-higgs before-upgrade --children
    """
    deleted = vm_app.delete_vm_snapshot(ctx.session(), domain, snapshot, children=children, children_only=children_only,
                                        metadata_only=metadata_only)
    what = ", ".join(repr(n) for n in deleted) if deleted else "nothing (no descendants)"
    suffix = " (metadata only; disk data kept)" if metadata_only and deleted else ""
    click.echo(f"deleted {what} of domain {domain!r}{suffix}")
