"""``vmlfs entry ...``: add, edit, list, show, remove entries and choose the default one."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

from vmlfs.app.entries import add_entry, edit_entry
from vmlfs.cli import json_out
from vmlfs.cli.main import cli
from vmlfs.cli.options import Context, pass_context
from vmlfs.cli.prune import keep_rule_options, policy_from, rule_values
from vmlfs.engine.model import BackupDefaults, CvmfsSettings, EntryConfig
from vmlfs.engine.retention import StoredPolicy
from vmlfs.errors import InvalidRequest, VmlfsError

F = TypeVar("F", bound=Callable[..., Any])


def entry_settings(func: F) -> F:
    """The options ``entry add`` and ``entry edit`` share; unset ones leave a setting as it is."""
    options = [
        click.option("--include", multiple=True, metavar="PATTERN", help="Re-include paths an --exclude left out (gitignore-style, repeatable; edit: replaces the list)."),
        click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave paths out (gitignore-style, relative to the guest home, repeatable; edit: replaces the list)."),
        click.option("--release", help="The CernVM release the guest runs."),
        click.option("--domain", help="The libvirt domain that runs the guest."),
        click.option("--env-file", type=click.Path(dir_okay=False), help="For a local guest: take env.txt from this file."),
        click.option("--vm-memory", type=click.IntRange(64, 1 << 20), metavar="MIB", help="Provisioning: memory of the domain [2048]."),
        click.option("--vm-cpus", type=click.IntRange(1, 256), metavar="N", help="Provisioning: virtual CPUs [1]."),
        click.option("--vm-network", type=click.Choice(["nat", "user", "none"]), help="Provisioning: libvirt network 'default' (nat), QEMU user networking, or none [nat]."),
        click.option("--vm-ssh", metavar="HOST:PORT", help="Provisioning: where the new guest's sshd answers (e.g. a port forward) [from libvirt's DHCP leases, port 22; with --vm-network user: a free port on 127.0.0.1]."),
        click.option("--vm-pool", metavar="POOL", help="Provisioning: the libvirt storage pool for the domain's disks [default]."),
        click.option("--vm-snapshot/--no-vm-snapshot", default=None, help="Backups take a libvirt snapshot of the domain alongside [no]."),
        click.option("--consistent/--no-consistent", default=None, help="Backups freeze (SSH guests) or pause (local guests) the domain [no]."),
        click.option("--retries", type=click.IntRange(0, 100), help="Backups reconnect and start over this many times if a connection drops [0]."),
        click.option("--with-cvmfs-cache/--without-cvmfs-cache", "cvmfs_cache", default=None, help="Backups capture the guest's CernVM-FS cache (docs/cernvm.md) [no]."),
        click.option("--cvmfs-root", metavar="DIR", help="The guest's root directory, where /etc/cvmfs and the cache base are looked up (a local guest's mounted disk) [/]."),
        click.option("--cvmfs-cache-base", metavar="PATH", help="The guest's CernVM-FS cache base, instead of reading CVMFS_CACHE_BASE from its configuration."),
    ]
    for option in reversed(options):
        func = option(func)
    func = click.option("--prune-after/--no-prune-after", default=None,
                        help="Prune by the stored keep rules after every backup [no].")(func)
    return keep_rule_options(func)


def _stored_policy(rules: dict[str, Any], prune_after: bool | None, old: StoredPolicy | None) -> StoredPolicy | None:
    """The keep rules to store: the ones given (they replace the old ones), else the old ones with
    ``prune_after`` changed; None when there are none."""
    policy = policy_from(rules)
    if policy is None and old is None:
        if prune_after:
            raise InvalidRequest("--prune-after needs keep rules", hint="add e.g. --keep-daily 7 --keep-weekly 4")
        return None
    return StoredPolicy(policy or old.policy, prune_after if prune_after is not None else bool(old and old.prune_after))


def _vm(memory: int | None, cpus: int | None, network: str | None, ssh: str | None, pool: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("memory", memory), ("cpus", cpus), ("network", network), ("ssh", ssh), ("pool", pool))
            if v is not None}


def _cvmfs(cache: bool | None, root: str | None, base: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("cache", cache), ("root", root), ("cache_base", base)) if v is not None}


def _backup(vm_snapshot: bool | None, consistent: bool | None, retries: int | None) -> dict[str, Any]:
    return {k: v for k, v in (("vm_snapshot", vm_snapshot), ("consistent", consistent), ("retries", retries)) if v is not None}


@cli.group()
def entry() -> None:
    """Manage entries (one logbook per guest environment)."""


@entry.command("add")
@click.argument("name")
@click.option("--guest", required=True, help="Guest home: a local directory or ssh://[user@]host[:port]/path.")
@entry_settings
@pass_context
def add(ctx: Context, name: str, guest: str, include: tuple[str, ...], exclude: tuple[str, ...],
        release: str | None, domain: str | None, env_file: str | None, vm_memory: int | None, vm_cpus: int | None,
        vm_network: str | None, vm_ssh: str | None, vm_pool: str | None, vm_snapshot: bool | None,
        consistent: bool | None, retries: int | None, cvmfs_cache: bool | None, cvmfs_root: str | None,
        cvmfs_cache_base: str | None, prune_after: bool | None, **rules: Any) -> None:
    """Add entry NAME backing up GUEST.

    Example: vmlfs entry add higgs --guest ssh://physicist@cvm/home/physicist --release 2021.05-1 --domain cvm
    """
    cfg = EntryConfig(name, guest, list(include), list(exclude), release, domain, env_file,
                      _vm(vm_memory, vm_cpus, vm_network, vm_ssh, vm_pool),
                      BackupDefaults(**_backup(vm_snapshot, consistent, retries)),
                      _stored_policy(rule_values(rules), prune_after, None),
                      CvmfsSettings(**_cvmfs(cvmfs_cache, cvmfs_root, cvmfs_cache_base)))
    add_entry(ctx.session(), cfg)
    click.echo(f"added entry {name} ({guest})")


@entry.command("edit")
@click.argument("name")
@click.option("--guest", help="Guest home: a local directory or ssh://[user@]host[:port]/path.")
@entry_settings
@click.option("--no-keep-rules", is_flag=True, help="Remove the stored keep rules.")
@pass_context
def edit(ctx: Context, name: str, guest: str | None, include: tuple[str, ...], exclude: tuple[str, ...],
         release: str | None, domain: str | None, env_file: str | None, vm_memory: int | None, vm_cpus: int | None,
         vm_network: str | None, vm_ssh: str | None, vm_pool: str | None, vm_snapshot: bool | None,
         consistent: bool | None, retries: int | None, cvmfs_cache: bool | None, cvmfs_root: str | None,
         cvmfs_cache_base: str | None, prune_after: bool | None, no_keep_rules: bool, **rules: Any) -> None:
    """Change settings of entry NAME; options not given keep their value.

    Example: vmlfs entry edit higgs --vm-snapshot --retries 2 --keep-daily 7 --keep-weekly 4 --prune-after
    """
    changes: dict[str, Any] = {k: v for k, v in (("guest", guest), ("release", release), ("domain", domain),
                                                 ("env_file", env_file)) if v is not None}
    if include:
        changes["include"] = list(include)
    if exclude:
        changes["exclude"] = list(exclude)
    values = rule_values(rules)
    if no_keep_rules:
        changes["prune"] = None
    elif policy_from(values) is not None or prune_after is not None:
        changes["prune"] = _stored_policy(values, prune_after, ctx.store().load_entry(name).prune)
    edit_entry(ctx.session(), name, changes, _vm(vm_memory, vm_cpus, vm_network, vm_ssh, vm_pool),
               _backup(vm_snapshot, consistent, retries), _cvmfs(cvmfs_cache, cvmfs_root, cvmfs_cache_base))
    click.echo(f"edited entry {name}")


@entry.command("list")
@json_out.option
@pass_context
def list_entries(ctx: Context, as_json: bool) -> None:
    """List entries, with their guest and number of backups.

    Example: vmlfs entry list --json
    """
    store = ctx.store()
    default = store.default_entry()
    docs = []
    for name in store.entry_names():
        mark = "*" if name == default else " "
        try:  # one damaged entry is reported on its line; the others are still listed
            cfg = store.load_entry(name)
            count = len(store.backups(name))
        except VmlfsError as exc:
            docs.append({"name": name, "default": name == default, "error": str(exc)})
            if not as_json:
                click.echo(f"{mark} {name:<24} DAMAGED: {exc}")
            continue
        docs.append({"name": name, "default": name == default, "guest": cfg.guest, "backups": count})
        if not as_json:
            click.echo(f"{mark} {name:<24} {count:>4} backups  {cfg.guest}")
    if as_json:
        json_out.emit(docs)


@entry.command("show")
@click.argument("name")
@json_out.option
@pass_context
def show(ctx: Context, name: str, as_json: bool) -> None:
    """Show an entry's configuration: its entry.json, which is JSON already (--json changes nothing).

    Example: vmlfs entry show higgs
    """
    click.echo(ctx.store().load_entry(name).to_json().decode(), nl=False)


@entry.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@pass_context
def remove(ctx: Context, name: str, yes: bool) -> None:
    """Remove an entry and ALL its backups.

    Example: vmlfs entry remove old-test --yes
    """
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
    """Make NAME the entry that /control/snapshot acts on.

    Example: vmlfs entry default higgs
    """
    ctx.store().set_default_entry(name)
    click.echo(f"default entry: {name}")
