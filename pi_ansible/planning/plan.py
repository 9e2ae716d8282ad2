"""`pi start`'s whole decision in one pure function: config, GPUs, port, fit, command line.

The CLI and the model_start playbook (through a filter or action plugin) both call plan_start,
so they cannot plan differently. Facts in, a StartPlan out, or a PiError that says why not and
what would fit, before anything is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from pi_ansible.catalog import Catalog, CatalogConfig, CatalogEntry
from pi_ansible.errors import PiError
from pi_ansible.planning import vllm_args
from pi_ansible.planning.cmdline import (
    Command,
    engine_command,
    parse_context,
    parse_memory,
    parse_vllm_len,
    passthrough_settings,
)
from pi_ansible.planning.fit import CONTEXT_STEP, FitResult, estimate_fit
from pi_ansible.planning.gpu_state import GpuState
from pi_ansible.planning.model_config import Arch
from pi_ansible.planning.placement import (
    VLLM_DEFAULT_FRACTION,
    Placement,
    PlacementRefused,
    PlacementRequest,
    RunningModel,
    choose_configs,
    config_type_matches,
    place,
)

# pi's documented default for --memory. vLLM's own is 0.92; 0.9 leaves a little more for the
# driver's reserve and for a second tool's CUDA context on the same GPU.
DEFAULT_MEMORY_FRACTION = 0.9


class FitRefused(PiError):
    """The model does not fit; .fit has the numbers and the options that would."""

    def __init__(self, message: str, fit: FitResult):
        super().__init__(message)
        self.fit = fit


@dataclass(frozen=True)
class StartPlan:
    entry: CatalogEntry
    config: CatalogConfig | None  # None with --vllm
    placement: Placement
    fit: FitResult
    command: Command
    memory_fraction: float
    max_model_len: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.entry.id, "config": self.config.to_dict() if self.config else None,
                "placement": self.placement.to_dict(), "fit": self.fit.to_dict(),
                "command": self.command.to_dict(), "memory_fraction": self.memory_fraction,
                "max_model_len": self.max_model_len, "warnings": list(self.warnings)}


def unknown_entry(model_id: str, gpu_count: int | None) -> CatalogEntry:
    """pi starts models it does not know on one GPU with no tool flags; so do we (or on --gpus K)."""
    count = gpu_count or 1
    return CatalogEntry(id=model_id, name=model_id.split("/")[-1][:64], family="unknown", tool_call_parser=None,
                        reasoning_parser=None, api="completions", trust_remote_code=False,
                        configs=(CatalogConfig(gpu_count=count, gpu_types=(), args=()),), origin="user")


def _with_placed(gpus: Sequence[GpuState], placed: Sequence[GpuState]) -> list[GpuState]:
    by_index = {g.index: g for g in placed}
    return [by_index.get(g.index, g) for g in gpus]


def _fit_config(entry: CatalogEntry, arch: Arch, fp8: tuple[str, Arch] | None, args: list[str], count: int,
                fraction: float, context: int | None, gpus: Sequence[GpuState], use: Sequence[int] | None,
                ) -> tuple[FitResult, int, str | None]:
    """Fit for one config; with no context asked for, the longest that fits (up to the model's)."""
    tp, pp, dp, _ = vllm_args.parallelism(args)
    if tp * pp * dp == 1:
        tp = count
    kv_dtype = vllm_args.flag_value(args, "--kv-cache-dtype")
    common = dict(gpu_count=count, memory_fraction=fraction, kv_cache_dtype=kv_dtype, tp=tp, pp=pp, dp=dp,
                  use=use, fp8_variant=fp8, gpu_counts=entry.gpu_counts)
    fit = estimate_fit(arch, gpus, max_model_len=context, **common)
    note = None
    if context is None and not fit.fits and fit.free_ok and fit.max_context >= CONTEXT_STEP:
        shorter = (fit.max_context // CONTEXT_STEP) * CONTEXT_STEP
        retry = estimate_fit(arch, gpus, max_model_len=shorter, **common)
        if retry.fits:
            fit = retry
            note = (f"context set to {shorter:,} tokens, the longest that fits at --memory {fraction:.0%} "
                    f"(the model allows {arch.max_model_len:,}); pass --context to choose")
    return fit, fit.max_model_len, note


def _refusal(entry: CatalogEntry, fit: FitResult, gpus: Sequence[GpuState]) -> FitRefused:
    kind = gpus[0].name if gpus else "GPU"
    lines = [f"{entry.name} does not fit on {fit.gpu_count}× {kind} at --memory {fit.memory_fraction:.0%}:"]
    lines += [f"  {line}" for line in fit.summary()]
    return FitRefused("\n".join(lines), fit)


def _busy(refused: PlacementRefused, entry: CatalogEntry, arch: Arch, fp8, args: list[str], count: int,
          asked: int | None, gpus: Sequence[GpuState]) -> PiError:
    """The placement refusal, plus whether the share that is free would hold the model at all."""
    share = refused.max_share
    hint = f"the free share ({share:.0%}) cannot hold {entry.name}; stop a model or use another pod"
    if share >= 0.05:
        best = sorted(refused.usage, key=lambda u: (u.mig_enabled, -u.free_mib / max(u.total_mib, 1)))[:count]
        free = {u.index: u.free_mib for u in best}
        pod = [replace(g, memory_free_mib=free[g.index]) if g.index in free else g for g in gpus]
        fit, length, _ = _fit_config(entry, arch, fp8, args, count, share, asked, pod, [u.index for u in best])
        if fit.fits:
            hint = f"try --memory {share:.0%} (holds {length:,} tokens of context)"
    return PlacementRefused(f"{refused}\n{hint}", refused.usage, share)


def plan_start(catalog: Catalog, model: str, *, name: str, gpus: Sequence[GpuState], venv: str,
               running_models: Iterable[RunningModel] = (), listening_ports: Iterable[int] = (),
               processes: Iterable[dict] = (), memory=None, context=None, gpu_count: int | None = None,
               vllm_passthrough: list[str] | None = None, arch: Arch | None = None) -> StartPlan:
    """Plan `pi start MODEL --name NAME [--memory P] [--context N] [--gpus K] [--vllm …]`.

    gpus/processes: the pod's nvidia-smi facts; running_models: its manifests; listening_ports:
    its listening TCP ports. arch: for a model the catalog does not know (or to override), from
    its config.json (model_config.arch_from_config). Raises PiError / FitRefused.
    """
    running = list(running_models)
    ports = list(listening_ports)
    procs = list(processes)
    entry = catalog.get(model) or unknown_entry(model, gpu_count)
    arch = arch or entry.arch
    if arch is None:
        raise PiError(f"{model} is not in the catalog: its config.json is needed to check that it fits "
                      "(planning.model_config.arch_from_config)")
    variant = catalog.fp8_variant_of(entry)
    fp8 = (variant.id, variant.arch) if variant is not None and variant.arch is not None else None
    user_fraction = parse_memory(memory) if memory is not None else None
    user_context = parse_context(context) if context is not None else None
    if vllm_passthrough is not None:
        s = passthrough_settings(list(vllm_passthrough))
        fraction = s["memory_fraction"] or VLLM_DEFAULT_FRACTION
        placement = place(PlacementRequest(name, s["gpu_count"], fraction), gpus, running, ports, processes=procs)
        # the flags run as given: vLLM's default context is the model's maximum, nothing is shortened
        fit, length, _ = _fit_config(entry, arch, fp8, list(vllm_passthrough), s["gpu_count"], fraction,
                                     s["max_model_len"] or arch.max_model_len,
                                     _with_placed(gpus, placement.gpus), placement.gpu_indices)
        if not fit.fits:
            raise _refusal(entry, fit, gpus)
        command = engine_command(entry, None, served_name=name, port=placement.port, memory_fraction=user_fraction,
                                 max_model_len=user_context, gpus=list(placement.gpu_indices),
                                 vllm_passthrough=list(vllm_passthrough), venv=venv,
                                 requested_gpu_count=gpu_count)
        return StartPlan(entry, None, placement, fit, command, fraction, length, list(command.warnings))
    first_error: PiError | None = None
    for config in choose_configs(entry, gpus, gpu_count):
        args = list(config.args)
        gmu = vllm_args.flag_value(args, "--gpu-memory-utilization")
        fraction = user_fraction or (float(gmu) if gmu else DEFAULT_MEMORY_FRACTION)
        mml = vllm_args.flag_value(args, "--max-model-len")
        asked = user_context or (parse_vllm_len(mml) if mml else None)
        try:
            placement = place(PlacementRequest(name, config.gpu_count, fraction), gpus, running, ports,
                              processes=procs)
        except PlacementRefused as e:
            first_error = first_error or _busy(e, entry, arch, fp8, args, config.gpu_count, asked, gpus)
            continue
        fit, length, note = _fit_config(entry, arch, fp8, args, config.gpu_count, fraction, asked,
                                        _with_placed(gpus, placement.gpus), placement.gpu_indices)
        if not fit.fits:
            first_error = first_error or _refusal(entry, fit, gpus)
            continue
        command = engine_command(entry, config, served_name=name, port=placement.port, memory_fraction=fraction,
                                 max_model_len=length, gpus=list(placement.gpu_indices), vllm_passthrough=None,
                                 venv=venv)
        warnings = list(command.warnings) + ([note] if note else [])
        if not config_type_matches(config, gpus):
            warnings.append(f"this config was made for {'/'.join(config.gpu_types)}, not {gpus[0].name}; "
                            "the fit check above is what says it fits")
        return StartPlan(entry, config, placement, fit, command, fraction, length, warnings)
    assert first_error is not None  # choose_configs returns at least one config or raises
    raise first_error


def catalog_fit_table(catalog: Catalog, gpus: Sequence[GpuState]) -> list[dict]:
    """For `pi start` with no model: each catalog model on this pod's GPUs, if they were idle."""
    idle = [replace(g, memory_used_mib=0, memory_free_mib=None) for g in gpus]
    rows = []
    for entry in catalog:
        row = {"id": entry.id, "name": entry.name, "family": entry.family, "fits": False, "gpu_count": None,
               "max_context": 0, "why": ""}
        try:
            plan = plan_start(catalog, entry.id, name="probe", gpus=idle, venv="/venv")
            row.update(fits=True, gpu_count=plan.fit.gpu_count, max_context=plan.max_model_len)
        except FitRefused as e:
            row.update(gpu_count=e.fit.gpu_count, max_context=e.fit.max_context, why=e.fit.reasons[0])
        except PiError as e:
            row["why"] = str(e).splitlines()[0]
        rows.append(row)
    return rows
