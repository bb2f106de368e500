"""The ``vmlfs`` command: one click group, errors mapped to messages and exit codes here only.

Each command module registers its commands on :data:`cli` and is listed in
:data:`COMMAND_MODULES`; every command calls one use case of
:mod:`vmlfs.app` (or one query of the store) and lets :class:`VmlfsError` propagate to
:func:`main`, which prints one line (plus the hint) and exits with the
error's exit code. ``--debug`` shows the traceback too.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

import click

from vmlfs.cli.options import Context
from vmlfs.engine.throughput import held_collections
from vmlfs.errors import VmlfsError

# Which module defines each command. Modules are imported only when their
# command runs (or for --help), so `vmlfs backup` does not pay for importing
# pyfuse3, libvirt or httpx.
COMMAND_MODULES = {
    "entry": "entries",
    "backup": "backups", "list": "backups", "ls": "backups", "restore": "backups", "verify": "backups",
    "demo": "demo",
    "mount": "mount", "umount": "mount",
    "vm": "vm",
    "cernvm": "cernvm",
    "provision": "provision",
    "forget": "history", "protect": "history", "unprotect": "history", "gc": "history", "store": "history",
    "export": "history", "import": "history",
    "prune": "prune",
    "diff": "compare", "versions": "compare", "find": "compare",
    "serve": "serve",
}


#: Libraries whose INFO lines are per request or per channel ("HTTP Request: GET ... 404" reads like an
#: error to a user): only warnings from them, unless --debug.
QUIET_LIBRARIES = ("httpx", "httpcore", "asyncssh", "urllib3")
#: Libraries whose debug lines carry request headers (the S3 access key id and signature): warnings only,
#: even with --debug, so no credential reaches a log.
GUARDED_LIBRARIES = ("botocore", "boto3", "s3transfer")


class WholeHelpGroup(click.Group):
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's whole first sentence, wrapped, never cut with '...' (click's default)."""
        rows = [(name, cmd.get_short_help_str(limit=1 << 16)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class LazyGroup(WholeHelpGroup):
    group_class = WholeHelpGroup  # the command groups (entry, vm, cernvm) list their commands whole too

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            with held_collections():
                importlib.import_module(f"vmlfs.cli.{COMMAND_MODULES[name]}")
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        with held_collections():
            for module in sorted(set(COMMAND_MODULES.values())):
                importlib.import_module(f"vmlfs.cli.{module}")
        return super().list_commands(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", envvar="VMLFS_STORE", metavar="PATH|URL",
              help="Store directory, ssh://[user@]host/path or s3://BUCKET/PREFIX [env VMLFS_STORE; default $XDG_DATA_HOME/vmlfs].")
@click.option("--s3-endpoint", metavar="URL",
              help="S3 store on a server other than AWS, e.g. http://127.0.0.1:8333 [env AWS_ENDPOINT_URL]; "
                   "credentials as for every AWS tool (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE).")
@click.option("--accept-new-store-host-key", is_flag=True,
              help="SSH store: trust an unknown host key and add it to known_hosts (a changed key is always refused).")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--debug", is_flag=True, help="Verbose logs and tracebacks.")
@click.version_option(package_name="vmlfs")
@click.pass_context
def cli(ctx: click.Context, store: str | None, s3_endpoint: str | None, accept_new_store_host_key: bool, quiet: bool,
        debug: bool) -> None:
    """vmlfs: a logbook of CernVM environments, backed up, browsable and restorable."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO,
        format="vmlfs: %(message)s" if not debug else "%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    for guarded in GUARDED_LIBRARIES:
        logging.getLogger(guarded).setLevel(logging.WARNING)
    if not debug:
        for chatty in QUIET_LIBRARIES:
            logging.getLogger(chatty).setLevel(logging.WARNING)
    ctx.obj = Context(store_path=store, quiet=quiet, debug=debug, accept_new_store_host_key=accept_new_store_host_key,
                      s3_endpoint=s3_endpoint)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="vmlfs", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("vmlfs: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VmlfsError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"vmlfs: error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"vmlfs: hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("vmlfs: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
