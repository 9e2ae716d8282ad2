"""Which GPUs and which port a new model gets: pure, from the pod's facts and its manifests.

pi counted models per GPU in its local JSON and took ports from the same file. Here memory is
what counts: each running model books `ceil(fraction × total)` on its GPUs (from the manifests on
the pod, so models started by a plain playbook count too), other processes nvidia-smi lists book
what they use, and vLLM's start-up check (budget ≤ free) decides where a new model can go.
CUDA_VISIBLE_DEVICES is always set, for one GPU or many.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

from pi_ansible.errors import PiError
from pi_ansible.planning.gpu_state import GpuState, MiB, gib, gpu_type_matches

FIRST_PORT = 8001  # pi's first model port; 8000 is left for whatever else the pod runs
LAST_PORT = 65535
IDLE_MIB = 256  # below this a GPU counts as unused (driver/persistence leftovers; MIG shows 59)
VLLM_DEFAULT_FRACTION = 0.92  # what vLLM takes when a manifest does not say
VLLM_PROCESS_PREFIX = "VLLM"  # vLLM titles its GPU processes VLLM::EngineCore, VLLM::Worker_TP0…


@dataclass(frozen=True)
class RunningModel:
    """A model already on the pod, as its manifest describes it."""

    name: str
    port: int | None = None
    gpus: tuple[int, ...] = ()
    gpu_uuids: tuple[str, ...] = ()
    memory_fraction: float | None = None
    pids: tuple[int, ...] = ()

    @classmethod
    def from_manifest(cls, m: dict) -> RunningModel:
        """Tolerant of what a manifest may hold: gpus as indices, UUIDs or {index, uuid} objects."""
        indices, uuids = [], []
        for g in m.get("gpus") or []:
            if isinstance(g, dict):
                if isinstance(g.get("index"), int):
                    indices.append(g["index"])
                if isinstance(g.get("uuid"), str):
                    uuids.append(g["uuid"])
            elif isinstance(g, int) and not isinstance(g, bool):
                indices.append(g)
            elif isinstance(g, str) and g.isdigit():
                indices.append(int(g))
            elif isinstance(g, str):
                uuids.append(g)
        uuids += [u for u in m.get("gpu_uuids") or [] if isinstance(u, str)]
        fraction = m.get("memory_fraction")
        if not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction <= 1:
            fraction = None
        pids = [p for p in (m.get("pids") or [m.get("pid")]) if isinstance(p, int) and not isinstance(p, bool)]
        port = m.get("port") if isinstance(m.get("port"), int) and not isinstance(m.get("port"), bool) else None
        return cls(name=str(m.get("name") or ""), port=port, gpus=tuple(indices), gpu_uuids=tuple(uuids),
                   memory_fraction=fraction, pids=tuple(pids))


@dataclass(frozen=True)
class PlacementRequest:
    name: str
    gpu_count: int
    memory_fraction: float


@dataclass(frozen=True)
class GpuUse:
    """One GPU's memory as planning books it (MiB)."""

    index: int
    uuid: str | None
    name: str
    total_mib: int
    reserved_mib: int
    booked_mib: int  # running models' budgets plus other processes (or nvidia-smi's used, if more)
    free_mib: int
    models: tuple[str, ...]
    mig_enabled: bool

    @property
    def idle(self) -> bool:
        return not self.models and self.booked_mib < IDLE_MIB


@dataclass(frozen=True)
class Placement:
    gpu_indices: tuple[int, ...]
    gpu_uuids: tuple[str | None, ...]
    port: int
    gpus: tuple[GpuState, ...]  # the chosen GPUs, free memory as booked (for the fit check)
    usage: tuple[GpuUse, ...]  # every GPU of the pod

    @property
    def cuda_visible_devices(self) -> str:
        # nvidia-smi indices, read in PCI order thanks to CUDA_DEVICE_ORDER=PCI_BUS_ID. Not UUIDs:
        # vLLM maps CUDA_VISIBLE_DEVICES entries to NVML devices with int().
        return ",".join(str(i) for i in self.gpu_indices)

    @property
    def env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self.cuda_visible_devices, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    def to_dict(self) -> dict:
        return {"gpu_indices": list(self.gpu_indices), "gpu_uuids": list(self.gpu_uuids), "port": self.port,
                "cuda_visible_devices": self.cuda_visible_devices, "env": self.env,
                "gpus": [g.to_dict() for g in self.gpus], "usage": [asdict(u) for u in self.usage]}


def _model_gpus(model: RunningModel, gpus: Sequence[GpuState]) -> list[GpuState]:
    # UUIDs first: indices can change across reboots, UUIDs cannot
    by_uuid = {g.uuid: g for g in gpus if g.uuid}
    by_index = {g.index: g for g in gpus}
    found = {by_uuid[u].index: by_uuid[u] for u in model.gpu_uuids if u in by_uuid}
    if not found:
        found = {i: by_index[i] for i in model.gpus if i in by_index}
    return list(found.values())


def gpu_usage(gpus: Sequence[GpuState], running_models: Iterable[RunningModel] = (),
              processes: Iterable[dict] = ()) -> list[GpuUse]:
    """Per GPU: what running models (manifests) and other processes (nvidia-smi) hold or will hold."""
    models = list(running_models)
    booked_by_models = {g.index: 0 for g in gpus}
    names: dict[int, list[str]] = {g.index: [] for g in gpus}
    for m in models:
        fraction = m.memory_fraction or VLLM_DEFAULT_FRACTION
        for g in _model_gpus(m, gpus):
            # a model still starting has not taken its budget yet; it will
            booked_by_models[g.index] += math.ceil(g.memory_total_mib * fraction)
            names[g.index].append(m.name)
    model_pids = {p for m in models for p in m.pids}
    index_of_uuid = {g.uuid: g.index for g in gpus if g.uuid}
    others = {g.index: 0 for g in gpus}
    for p in processes:
        idx = index_of_uuid.get(p.get("gpu_uuid"), p.get("gpu_index"))
        if idx not in others:
            continue
        name = str(p.get("process_name") or "")
        # a model's own engine processes are already booked through its manifest
        if p.get("pid") in model_pids or (names[idx] and name.startswith(VLLM_PROCESS_PREFIX)):
            continue
        used = p.get("used_memory_mib")
        others[idx] += used if isinstance(used, int) and used > 0 else 0
    out = []
    for g in gpus:
        planned = booked_by_models[g.index] + others[g.index]
        booked = max(g.memory_used_mib, planned)
        free = max(0, min(g.free_mib, g.memory_total_mib - g.memory_reserved_mib - planned))
        out.append(GpuUse(index=g.index, uuid=g.uuid, name=g.name, total_mib=g.memory_total_mib,
                          reserved_mib=g.memory_reserved_mib, booked_mib=booked, free_mib=free,
                          models=tuple(names[g.index]), mig_enabled=g.mig_enabled))
    return out


def choose_port(listening_ports: Iterable[int], running_models: Iterable[RunningModel] = ()) -> int:
    """The first port from 8001 that nothing listens on and no manifest claims (a stopped or
    starting model keeps its port)."""
    taken = {p for p in listening_ports if isinstance(p, int)} | {m.port for m in running_models if m.port}
    for port in range(FIRST_PORT, LAST_PORT + 1):
        if port not in taken:
            return port
    raise PiError(f"no free port from {FIRST_PORT} to {LAST_PORT} on the pod; stop a model (pi stop NAME)")


class PlacementRefused(PiError):
    """Too little free memory; .usage has every GPU's booking, .max_share the largest --memory
    that the best GPUs could still give (0 when none)."""

    def __init__(self, message: str, usage: list[GpuUse], max_share: float):
        super().__init__(message)
        self.usage = usage
        self.max_share = max_share


def _refusal(request: PlacementRequest, usage: list[GpuUse]) -> PlacementRefused:
    lines = [f"not enough GPU memory for {request.name!r}: it needs {request.gpu_count} GPU(s) with "
             f"{request.memory_fraction:.0%} of their memory free (vLLM takes that share at start)"]
    for u in usage:
        need = math.ceil(u.total_mib * request.memory_fraction)
        state = "MIG enabled (whole GPUs only)" if u.mig_enabled else \
            f"{gib(u.free_mib * MiB)} free of {gib(u.total_mib * MiB)}, needs {gib(need * MiB)}"
        held = f"; used by {', '.join(u.models)}" if u.models else ""
        lines.append(f"  GPU {u.index}: {state}{held}")
    whole = sorted((u for u in usage if not u.mig_enabled), key=lambda u: -u.free_mib / max(u.total_mib, 1))
    best = whole[:request.gpu_count]
    share = 0.0
    if len(best) == request.gpu_count:
        share = math.floor(min(u.free_mib / max(u.total_mib, 1) for u in best) * 100) / 100
    busy = sorted({n for u in usage for n in u.models})
    if busy:
        lines.append(f"free GPUs with `pi stop NAME` ({', '.join(busy)} running)")
    return PlacementRefused("\n".join(lines), usage, share)


def place(request: PlacementRequest, gpus: Sequence[GpuState], running_models: Iterable[RunningModel] = (),
          listening_ports: Iterable[int] = (), *, processes: Iterable[dict] = ()) -> Placement:
    """Choose GPUs (unused ones first, then those with the most room) and a port for a new model.

    running_models: the pod's manifests; processes: nvidia-smi's compute apps (build_facts).
    Raises PiError when the name is taken, the pod has too few GPUs or too little free memory.
    """
    models = list(running_models)
    if not isinstance(request.gpu_count, int) or request.gpu_count < 1:
        raise PiError(f"GPU count must be a whole number ≥ 1, got {request.gpu_count!r}")
    if not 0 < request.memory_fraction <= 1:
        raise PiError(f"memory fraction must be in (0, 1], got {request.memory_fraction!r}")
    if any(m.name == request.name for m in models):
        raise PiError(f"a model named {request.name!r} is already on this pod; pick another --name "
                      f"or stop it first (pi stop {request.name})")
    if request.gpu_count > len(gpus):
        raise PiError(f"{request.name!r} needs {request.gpu_count} GPU(s) and the pod has {len(gpus)}")
    usage = gpu_usage(gpus, models, processes)
    eligible = [u for u in usage
                if not u.mig_enabled and u.free_mib >= math.ceil(u.total_mib * request.memory_fraction)]
    eligible.sort(key=lambda u: (not u.idle, -u.free_mib, u.index))
    if len(eligible) < request.gpu_count:
        raise _refusal(request, usage)
    chosen = sorted(eligible[:request.gpu_count], key=lambda u: u.index)
    by_index = {g.index: g for g in gpus}
    planned = tuple(replace(by_index[u.index], memory_free_mib=u.free_mib) for u in chosen)
    return Placement(gpu_indices=tuple(u.index for u in chosen), gpu_uuids=tuple(u.uuid for u in chosen),
                     port=choose_port(listening_ports, models), gpus=planned, usage=tuple(usage))


def config_type_matches(config, gpus: Sequence[GpuState]) -> bool:
    types = list(getattr(config, "gpu_types", ()) or ())
    return not types or any(gpu_type_matches(g.name, t) for g in gpus[:1] for t in types)


def choose_configs(entry, gpus: Sequence[GpuState], gpu_count: int | None = None) -> list:
    """The catalog configs to try, best first.

    With --gpus K: the configs for K GPUs (those made for this GPU type first); none is an error
    listing the counts that exist. Without: every config the pod has GPUs for, those for its GPU
    type first, fewest GPUs first (the fit check picks the first that fits, leaving the rest of
    the pod free). pi took the largest count; a smaller footprint lets more models share a pod.
    """
    counts = entry.gpu_counts
    if gpu_count is not None:
        if not isinstance(gpu_count, int) or isinstance(gpu_count, bool) or gpu_count < 1:
            raise PiError(f"--gpus must be a whole number ≥ 1, got {gpu_count!r}")
        if gpu_count > len(gpus):
            raise PiError(f"--gpus {gpu_count}: the pod has {len(gpus)} GPU(s)")
        matches = [c for c in entry.configs if c.gpu_count == gpu_count]
        if not matches:
            listed = ", ".join(str(c) for c in counts)
            raise PiError(f"{entry.name} has no config for {gpu_count} GPU(s); its configs are for {listed} "
                          f"GPU(s). Use --gpus {counts[0]}" + (f" (or {', '.join(map(str, counts[1:]))})"
                                                               if len(counts) > 1 else "")
                          + ", or give your own flags with --vllm")
        return sorted(matches, key=lambda c: not config_type_matches(c, gpus))
    fitting = [c for c in entry.configs if c.gpu_count <= len(gpus)]
    if not fitting:
        raise PiError(f"{entry.name} needs at least {counts[0]} GPUs (configs: {', '.join(map(str, counts))}) "
                      f"and the pod has {len(gpus)}")
    return sorted(fitting, key=lambda c: (not config_type_matches(c, gpus), c.gpu_count))
