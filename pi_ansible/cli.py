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
            err = click.ClickException(str(exc))
            err.exit_code = getattr(exc, "exit_code", 1)
            raise err from None
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
@click.option("--profile", "profiles", multiple=True,
              help="A pod for this GPU profile, PROFILE or NAME=PROFILE (repeatable).")
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
@click.option("--pod", "only", multiple=True, help="Remove only this pod (repeatable); default: the whole lab.")
@click.option("--json", "as_json", is_flag=True)
def lab_down(only, as_json) -> None:
    """Stop lab pods and remove their processes, mounts, namespaces and cgroups (all of it by default)."""
    from .lab.layout import LabLayout
    from .lab.pods import down

    removed = down(LabLayout.default(), log=_log, only=list(only) or None)
    if as_json:
        emit_json({"removed": removed})
    else:
        click.echo(f"Lab down ({len(removed)} pod(s) removed).")


@lab.command("restart")
@click.argument("name")
def lab_restart(name) -> None:
    """Reboot one lab pod's container (same files, same address), as a pod reboot would."""
    import time

    from .lab.layout import LabLayout
    from .lab.pods import restart

    started = time.monotonic()
    pod = restart(LabLayout.default(), name, log=_log)
    click.echo(f"Pod {pod.name} rebooted in {time.monotonic() - started:.1f} s.")


@lab.command("env")
@click.argument("pod", required=False)
def lab_env(pod) -> None:
    """Print the exports that point pi at the lab's package index and hub double (and POD's ssh string)."""
    import shlex

    from .lab.layout import LabLayout
    from .lab.pods import status
    from .lab.servicectl import lab_service_urls

    urls = lab_service_urls()
    click.echo(f"export PI_INDEX_URL={urls['index']}\nexport HF_ENDPOINT={urls['hub']}")
    if pod:
        found = [p for p in status(LabLayout.default())["pods"] if p["name"] == pod]
        if not found:
            raise click.ClickException(f"no lab pod named {pod!r}; see `pi lab status`")
        click.echo(f"export PI_LAB_SSH={shlex.quote(found[0]['ssh'])}")


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
    out = setup_pod(req, on_event=printer(), on_start=_log)
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


@pods.command("update")
@click.argument("names", nargs=-1)
@click.option("--index-url", envvar="PI_INDEX_URL", default=None,
              help="A package index mirror for uv, vLLM and torch (env PI_INDEX_URL).")
@click.option("--hf-endpoint", envvar="HF_ENDPOINT", default=None, help="A Hugging Face Hub mirror (env HF_ENDPOINT).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (progress goes to stderr).")
def pods_update(names, index_url, hf_endpoint, as_json) -> None:
    """Run the setup again on set-up pods (NAMES, default all), all at once in one playbook run.

    Each pod keeps its recorded vLLM variant and models path; change those with `pi pods setup`."""
    from .pod_setup import update_pods
    from .progress import printer

    out = update_pods(list(names), index_url=index_url, hf_endpoint=hf_endpoint, on_event=printer(), on_start=_log)
    if as_json:
        emit_json({"pods": out})
        return
    for pod in out:
        gpus = pod["gpus"]
        click.echo(f"Pod {pod['name']} is up to date ({pod['changed']} change(s)): {len(gpus)}x "
                   f"{gpus[0]['name'] if gpus else '?'}, vLLM {pod['vllm_version']} ({pod['engine_variant']}, "
                   f"{pod['cuda_variant']}), models in {pod['models_path']}")
        for note in pod["notes"]:
            click.echo(f"  Note: {note}")


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


# --------------------------------------------------------------------------------------------- models


def _model_pod(state, name: str | None, pod: str | None) -> str:
    """--pod, else the pod the local cache says runs NAME, else the active pod."""
    if pod:
        state.pod(pod)
        return pod
    if name:
        holders = [p for p, models in state.models.items() if name in models and p in state.pods]
        if len(holders) == 1:
            return holders[0]
    if not state.active:
        raise click.ClickException("no active pod: pass --pod NAME, or set one with `pi pods active NAME`")
    return state.active


@cli.command("list")
@click.option("--pod", default=None, help="Only this pod (default: every pod).")
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON.")
def list_cmd(pod, as_json) -> None:
    """Models on the pods: state, GPUs, memory, restarts, uptime, URL (read from the pods themselves)."""
    from .model_list import format_uptime, list_models, rows

    results = list_models(pod)
    errors = [r.error for r in results if r.error]
    table = rows(results)
    if as_json:
        emit_json({"models": table, "errors": errors})
    elif not table:
        click.echo("No models running. Start one with `pi start MODEL --name NAME` (`pi start` lists what fits).")
    else:
        click.echo(f"{'POD':<10} {'NAME':<14} {'STATE':<9} {'GPUS':<7} {'MEM MiB':>8} {'RESTARTS':>8} "
                   f"{'UPTIME':>8}  {'MODEL':<36} URL")
        for r in table:
            gpus = ",".join(map(str, r["gpus"])) or "-"
            click.echo(f"{r['pod']:<10} {r['name']:<14} {r['state']:<9} {gpus:<7} {r['gpu_memory_used_mib'] or 0:>8} "
                       f"{r['restarts']:>8} {format_uptime(r['uptime_s']):>8}  {r['model']:<36} {r['url']}")
            for line in r.get("last_log", []):
                click.echo(f"{'':<10} | {line}")
    for e in errors:
        click.echo(f"Warning: {e}", err=True)


@cli.command("logs")
@click.argument("name")
@click.option("--pod", default=None)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl+C ends only this).")
@click.option("-n", "--lines", default=100, show_default=True, type=click.IntRange(1, 100000))
def logs(name, pod, follow, lines) -> None:
    """The engine's own log lines for a model (from the pod's journal)."""
    import subprocess

    from .ssh import batch_argv
    from .sshargs import validate_name

    validate_name(name, "model")
    state = _store().load()
    pod_name = _model_pod(state, name, pod)
    target = state.target(pod_name)
    cmd = f"journalctl -u pi-model-{name}.service -o cat --no-pager -n {lines}" + (" -f" if follow else "")
    if not follow:
        cmd = f"test -e /etc/pi-ansible/models/{name}.json || journalctl -u pi-model-{name}.service -q -n 1 " \
              f"| grep -q . || exit 3; " + cmd
    argv = batch_argv(target, cmd)
    err = ""
    try:
        proc = subprocess.run(argv, stderr=subprocess.PIPE, text=True)  # log lines stream to stdout
        rc, err = proc.returncode, proc.stderr or ""
    except KeyboardInterrupt:
        rc = 0  # Ctrl+C ends the follow, not an error
    if rc == 3:
        raise click.ClickException(f"no model named {name!r} on pod {pod_name}; see `pi list`")
    if rc == 255:  # ssh's own failure, not the remote command's
        why = err.strip().splitlines()[-1] if err.strip() else "ssh failed"
        raise click.ClickException(f"cannot reach pod {pod_name} over SSH ({why}); check that it is running: "
                                   f"pi ssh {pod_name} true")
    sys.stderr.write(err)
    sys.exit(0 if follow else rc)


@cli.command("stop")
@click.argument("name", required=False)
@click.option("--pod", default=None)
@click.option("--json", "as_json", is_flag=True)
def stop(name, pod, as_json) -> None:
    """Stop a model (every model on the pod when no NAME) and free its GPUs."""
    from .model_ops import stop_models
    from .progress import printer
    from .sshargs import validate_name

    if name:
        validate_name(name, "model")
    state = _store().load()
    pod_name = _model_pod(state, name, pod)
    stopped = stop_models(pod_name, [name] if name else [], on_event=printer())
    if as_json:
        emit_json({"pod": pod_name, "stopped": stopped})
    else:
        click.echo(f"Stopped {', '.join(stopped) or 'nothing (no models were running)'} on {pod_name}.")


@cli.command("start")
@click.argument("model", required=False)
@click.option("--name", default=None, help="Name of the endpoint (a DNS label); also its model id.")
@click.option("--memory", default=None, help="Share of each GPU's memory, e.g. 90% (vLLM's --gpu-memory-utilization).")
@click.option("--context", default=None, help="Context length: 4k, 8k, 16k, 32k, 64k, 128k or a number of tokens.")
@click.option("--gpus", type=int, default=None, help="How many GPUs (a catalog config for that count must exist).")
@click.option("--pod", default=None, help="The pod (default: the active pod).")
@click.option("--no-verify", is_flag=True, help="Skip the tool-call check after /health.")
@click.option("--show-key", is_flag=True, help="Print the API key in the export lines.")
@click.option("--vllm-args-json", hidden=True, default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (progress goes to stderr).")
def start(model, name, memory, context, gpus, pod, no_verify, show_key, vllm_args_json, as_json) -> None:
    """Start MODEL as an OpenAI-compatible endpoint: pi start MODEL --name NAME [...] [--vllm ARGS...].

    With no MODEL, lists the catalog models that fit the pod and how.
    """
    import os

    state = _store().load()
    pod_name = _model_pod(state, None, pod)
    if not model:
        _print_fit_table(state, pod_name, as_json)
        return
    if not name:
        raise click.ClickException("--name is required: pi start MODEL --name NAME (a DNS label, e.g. qwen)")
    from .model_ops import start_model, validate_request
    from .progress import printer

    vllm_args = json.loads(vllm_args_json) if vllm_args_json is not None else None
    request = validate_request(model, name, memory, context, gpus, vllm_args)
    _log(f"Starting {model} as {name} on pod {pod_name}")
    out = start_model(pod_name, request, verify=not no_verify, on_event=printer(),
                      on_log=lambda line: click.echo(f"  | {line}", err=True))
    if as_json:
        emit_json(out)
        return
    for w in out["warnings"]:
        click.echo(f"Warning: {w}", err=True)
    key = os.environ.get("PI_API_KEY", "") if show_key else "$PI_API_KEY"
    click.echo(f"Model {name} ({model}) is running on {pod_name}: GPU(s) {','.join(map(str, out['gpus']))}, "
               f"port {out['port']}, context {out['max_model_len']:,}, memory {out['memory_fraction']:.0%}.")
    click.echo(f"  Base URL: {out['base_url']}\n  Model id: {out['served_name']}")
    click.echo(f"  export OPENAI_BASE_URL={out['base_url']}\n  export OPENAI_API_KEY={key if show_key else chr(34) + key + chr(34)}"
               f"\n  export OPENAI_MODEL={out['served_name']}")
    click.echo(f"Talk to it: pi agent {name} \"Hello\"   Logs: pi logs {name}   Stop: pi stop {name}")


def _print_fit_table(state, pod_name: str, as_json: bool) -> None:
    from .catalog import load_catalog
    from .planning.gpu_state import gpus_from_facts
    from .planning.plan import catalog_fit_table

    pod = state.pod(pod_name)
    gpus = gpus_from_facts({"gpus": pod["gpus"]})
    table = catalog_fit_table(load_catalog(), gpus)
    if as_json:
        emit_json({"pod": pod_name, "models": table})
        return
    click.echo(f"Catalog models on {pod_name} ({len(gpus)}x {pod['gpus'][0]['name'] if gpus else '?'}), if its GPUs are idle:")
    for row in table:
        mark = "fits" if row["fits"] else "no"
        detail = f"{row['gpu_count']} GPU(s), up to {row['max_context']:,} tokens" if row["fits"] else row["why"]
        click.echo(f"  {mark:<5} {row['id']:<44} {detail}")
    click.echo("Start one with: pi start MODEL --name NAME")


@cli.command("agent", context_settings={"ignore_unknown_options": False})
@click.argument("name")
@click.argument("messages", nargs=-1)
@click.option("--pod", default=None)
@click.option("-i", "--interactive", is_flag=True)
@click.option("-c", "--continue", "continue_", is_flag=True, help="Continue the last session of this directory.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--api", type=click.Choice(["completions", "responses"]), default=None,
              help="Default: what the model's catalog entry says (responses for gpt-oss).")
@click.option("--system-prompt", default=None)
def agent(name, messages, pod, interactive, continue_, as_json, api, system_prompt) -> None:
    """Talk to a running model with an agent that can read, list, search and run commands here."""
    import os

    from .agent import run_agent
    from .agent.client import AgentError
    from .agent.prompts import code_navigation_prompt
    from .model_list import list_models

    state = _store().load()
    pod_name = _model_pod(state, name, pod)
    manifest = state.models.get(pod_name, {}).get(name)
    if manifest is None:  # the local cache is only a cache: ask the pod
        found = [r for r in list_models(pod_name) if name in r.models]
        if not found:
            raise click.ClickException(f"no model named {name!r} on pod {pod_name}; see `pi list`")
        manifest = found[0].models[name]["manifest"]
    key = os.environ.get("PI_API_KEY")
    if not key:
        raise click.ClickException("PI_API_KEY is not set: export the key your endpoints use (PI_API_KEY=...)")
    base_url = f"http://{state.target(pod_name).host}:{manifest['port']}/v1"
    try:
        rc = run_agent(base_url=base_url, api_key=key, model=manifest.get("served_name", name),
                       api=api or manifest.get("api", "completions"), messages=list(messages), json_output=as_json,
                       interactive=interactive or not messages, continue_=continue_,
                       system_prompt=system_prompt or code_navigation_prompt(os.getcwd()))
    except AgentError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(rc)


# ------------------------------------------------------------------------------------------ inventory


@cli.command("inventory")
@click.option("--json", "as_json", is_flag=True, help="The `ansible-inventory --list` JSON (default: a YAML inventory).")
def inventory_cmd(as_json) -> None:
    """The pods pi knows as an Ansible inventory (group pi_pods), with their SSH options.

    The same as the pi_state inventory plugin gives (inventory/pi.pi_state.yml):
    `ansible-playbook -i inventory/pi.pi_state.yml playbooks/site.yml`.
    """
    import yaml

    from .inventory import as_yaml_inventory, state_inventory

    listing = state_inventory(_store().load().to_dict())
    if as_json:
        emit_json(listing)
    else:
        click.echo(yaml.safe_dump(as_yaml_inventory(listing), sort_keys=False, width=1000), nl=False)


def split_vllm_args(argv: list[str]) -> list[str]:
    """`pi start … --vllm ARGS…`: everything after --vllm is vLLM's, passed through untouched (as in pi)."""
    if argv[:1] == ["start"] and "--vllm" in argv:
        i = argv.index("--vllm")
        return [*argv[:i], "--vllm-args-json", json.dumps(argv[i + 1:])]
    return argv


def main() -> None:
    cli(args=split_vllm_args(sys.argv[1:]), prog_name="pi")


if __name__ == "__main__":
    main()
