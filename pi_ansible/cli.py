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


# ----------------------------------------------------------------------------------------------- pods


@cli.group(cls=PiGroup, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the pods as JSON.")
@click.pass_context
def pods(ctx, as_json) -> None:
    """Pods: set up, list, choose the active one, remove (`pi pods` alone lists them)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(pods_list, as_json=as_json)


def _store():
    from .state import StateStore

    return StateStore()


@pods.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the pods as JSON.")
def pods_list(as_json) -> None:
    """List pods (the active one marked with *)."""
    state = _store().load()
    if as_json:
        emit_json({"active": state.active, "pods": [{"name": n, "active": n == state.active, **p}
                                                    for n, p in sorted(state.pods.items())]})
        return
    if not state.pods:
        click.echo("No pods yet. Set one up with: pi pods setup NAME \"ssh root@HOST\" --models-path /mnt/models")
        return
    for name, p in sorted(state.pods.items()):
        mark = "*" if name == state.active else " "
        gpus = p["gpus"]
        hw = f"{len(gpus)}x {gpus[0]['name']}" if gpus else "no GPU info"
        engine = f"vLLM {p['vllm_version'] or '?'} ({p['engine_variant']})"
        click.echo(f"{mark} {name:<14} {hw:<34} {engine:<24} {p['ssh']}")
        if p.get("models_path"):
            click.echo(f"  {'':<14} models: {p['models_path']}  driver {p['driver_version']} / CUDA {p['cuda_version']}")


@pods.command("setup")
@click.argument("name")
@click.argument("ssh")
@click.option("--mount", default=None, help='Mount command run on the pod, e.g. "mount -t nfs 10.0.0.5:/models /mnt/models".')
@click.option("--models-path", default=None, help="Where models live on the pod (default: the mount target).")
@click.option("--vllm", type=click.Choice(["release", "nightly", "gpt-oss"]), default="release", show_default=True)
@click.option("--index-url", envvar="PI_INDEX_URL", default=None,
              help="A package index mirror for uv, vLLM and torch (env PI_INDEX_URL).")
@click.option("--hf-endpoint", envvar="HF_ENDPOINT", default=None, help="A Hugging Face Hub mirror (env HF_ENDPOINT).")
@click.option("--reinstall", is_flag=True, help="Rebuild the pod's venv from nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (progress goes to stderr).")
def pods_setup(name, ssh, mount, models_path, vllm, index_url, hf_endpoint, reinstall, as_json) -> None:
    """Set up a pod over SSH: GPU facts, secrets, storage, uv and a CUDA-matched vLLM. Safe to re-run."""
    from .pod_setup import SetupRequest, setup_pod
    from .progress import printer

    req = SetupRequest(name=name, ssh=ssh, mount=mount, models_path=models_path, vllm=vllm,
                       index_url=index_url, hf_endpoint=hf_endpoint, reinstall=reinstall)
    _log(f"Setting up pod {name} ({ssh})")
    out = setup_pod(req, on_event=printer())
    if as_json:
        emit_json(out)
        return
    gpus = out["gpus"]
    click.echo(f"Pod {name} is set up ({out['changed']} change(s)).")
    click.echo(f"  GPUs:    {len(gpus)}x {gpus[0]['name'] if gpus else '?'}  (driver {out['driver_version']}, "
               f"CUDA {out['cuda_version']})")
    click.echo(f"  vLLM:    {out['vllm_version']} ({out['engine_variant']}, {out['cuda_variant']})")
    click.echo(f"  Models:  {out['models_path']}")
    for note in out["notes"]:
        click.echo(f"  Note:    {note}")
    click.echo(f"  Active:  {'yes' if out['active'] else f'no (make it active with `pi pods active {name}`)'}")


@pods.command("active")
@click.argument("name")
def pods_active(name) -> None:
    """Make NAME the pod that model commands use by default."""
    with _store().transaction() as state:
        state.set_active(name)
    click.echo(f"Active pod: {name}")


@pods.command("remove")
@click.argument("name")
def pods_remove(name) -> None:
    """Forget a pod locally (nothing on the pod changes, as in pi)."""
    with _store().transaction() as state:
        state.remove_pod(name)
    click.echo(f"Removed pod {name} from local state (the pod itself is untouched).")


@pods.command("import")
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True)
def pods_import(path, as_json) -> None:
    """Bring the TypeScript pi's pods (~/.pi/pods.json) over, without changing that file."""
    from .state import import_pi_pods

    report = import_pi_pods(path)
    if as_json:
        emit_json({"added": report.added, "notes": report.notes})
        return
    click.echo(f"Imported {len(report.added)} pod(s): {', '.join(report.added) or 'none'}")
    for note in report.notes:
        click.echo(f"  {note}")


def _target(name):
    state = _store().load()
    pod = name or state.active
    if not pod:
        raise click.ClickException("no active pod: name one, or set one with `pi pods active NAME`")
    return state.target(pod)


@cli.command("shell")
@click.argument("name", required=False)
def shell(name) -> None:
    """Open an interactive SSH session on a pod (the active one by default)."""
    import os

    argv = _target(name).argv(tty=True)
    os.execvp(argv[0], argv)


@cli.command("ssh")
@click.argument("args", nargs=-1, required=True)
def ssh_cmd(args) -> None:
    """Run a command on a pod: pi ssh [NAME] "CMD" (streams output, exits with the command's code)."""
    from .ssh import run_streaming

    if len(args) > 2:
        raise click.ClickException('quote the command: pi ssh [NAME] "CMD"')
    name, command = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    sys.exit(run_streaming(_target(name), command))


def main() -> None:
    cli(prog_name="pi")


if __name__ == "__main__":
    main()
