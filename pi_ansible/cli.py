"""The `pi` command line: parse, validate, print (text or --json). Nothing else lives here.

Imports of anything heavy (ansible, ansible_runner, openai) happen inside commands, so local
commands start fast.
"""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import PiError


class PiGroup(click.Group):
    """Turns PiError into `Error: …` (exit 1) and Ctrl+C into a short note (exit 130)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PiError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group(cls=PiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pi-ansible")
def cli() -> None:
    """Deploy and run LLMs on GPU pods with Ansible: set up pods, start models, talk to them."""


# ------------------------------------------------------------------------------------------------ lab


@cli.group(cls=PiGroup)
def lab() -> None:
    """Test pods on this machine (containers with GPU, engine and hub doubles). Needs root."""


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@lab.command("up")
@click.option("--pods", "count", type=int, default=None, help="How many pods (profiles in default order). Default 3.")
@click.option("--profile", "profiles", multiple=True, help="Bring up the pod for this GPU profile (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the pods as JSON.")
def lab_up(count, profiles, as_json) -> None:
    """Bring up lab pods; pods already running are kept (running it twice changes nothing)."""
    import time

    from .lab.layout import LabLayout
    from .lab.pods import pick_profiles, status, up

    lab_dir = LabLayout.default()
    started = time.monotonic()
    pods = up(lab_dir, pick_profiles(count, list(profiles) or None), log=_log)
    if as_json:
        emit_json(status(lab_dir))
        return
    click.echo(f"Lab ready in {time.monotonic() - started:.1f} s ({len(pods)} pod(s)):")
    for p in pods:
        click.echo(f"  {p.name:<10} {p.ip:<12} {p.ssh_string(lab_dir)}")
    click.echo(f"SSH aliases: ssh -F {lab_dir.ssh_config} lab-<pod>    Inventory: {lab_dir.inventory}")


@lab.command("down")
@click.option("--json", "as_json", is_flag=True)
def lab_down(as_json) -> None:
    """Stop every lab pod and remove its processes, mounts, namespaces and cgroups."""
    from .lab.layout import LabLayout
    from .lab.pods import down

    removed = down(LabLayout.default(), log=_log)
    if as_json:
        emit_json({"removed": removed})
    else:
        click.echo(f"Lab down ({len(removed)} pod(s) removed).")


@lab.command("status")
@click.option("--json", "as_json", is_flag=True)
def lab_status(as_json) -> None:
    """Show the lab pods and services."""
    from .lab.layout import LabLayout
    from .lab.pods import status

    st = status(LabLayout.default())
    if as_json:
        emit_json(st)
        return
    if not st["pods"]:
        click.echo("No lab pods. Start them with `pi lab up`.")
        return
    for p in st["pods"]:
        ssh = "ssh ok" if p["ssh_port_open"] else "ssh down"
        click.echo(f"{p['name']:<10} {p['ip']:<12} {p['container']:<8} {ssh:<8} {p['ssh']}")
    svc = st["services"]
    click.echo(f"index {svc['index']['url']} ({'up' if svc['index']['listening'] else 'down'}), "
               f"hub {svc['hub']['url']} ({'up' if svc['hub']['listening'] else 'down'})")


def main() -> None:
    cli(prog_name="pi")


if __name__ == "__main__":
    main()
