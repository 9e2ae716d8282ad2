"""One GPU as planning sees it: its memory now, from the nvidia-smi facts (`gpu_facts_parse.build_facts`)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class GpuState:
    index: int
    uuid: str | None
    name: str
    memory_total_mib: int
    memory_used_mib: int = 0
    memory_free_mib: int | None = None  # None: total − reserved − used
    memory_reserved_mib: int = 0
    mig_enabled: bool = False

    @property
    def total_bytes(self) -> int:
        return self.memory_total_mib * MiB

    @property
    def free_mib(self) -> int:
        if self.memory_free_mib is not None:
            return self.memory_free_mib
        return max(0, self.memory_total_mib - self.memory_reserved_mib - self.memory_used_mib)

    @property
    def free_bytes(self) -> int:
        return self.free_mib * MiB

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_fact(cls, gpu: dict) -> GpuState:
        """From one entry of build_facts()["gpus"]; unknown numbers count as 0 (nothing usable)."""
        def num(key: str, default: int = 0) -> int:
            v = gpu.get(key)
            return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else default

        free = gpu.get("memory_free_mib")
        return cls(
            index=num("index"),
            uuid=gpu.get("uuid") or None,
            name=str(gpu.get("name") or "unknown GPU"),
            memory_total_mib=num("memory_total_mib"),
            memory_used_mib=num("memory_used_mib"),
            memory_free_mib=int(free) if isinstance(free, int) and free >= 0 else None,
            memory_reserved_mib=num("memory_reserved_mib"),
            # build_facts sets mig_enabled; a lab profile says "mig"
            mig_enabled=bool(gpu.get("mig_enabled") or gpu.get("mig")),
        )


def gpus_from_facts(facts: dict) -> list[GpuState]:
    return sorted((GpuState.from_fact(g) for g in facts.get("gpus") or []), key=lambda g: g.index)


def gpu_type_matches(gpu_name: str, gpu_type: str) -> bool:
    """A catalog GPU type ("H100", "RTX 4090") names this GPU ("NVIDIA H100 80GB HBM3").

    Whole words only, so "H20" does not match "NVIDIA H200" (pi's substring test does).
    """
    words = r"\s+".join(re.escape(w) for w in gpu_type.split())
    return re.search(rf"(?<![A-Za-z0-9]){words}(?![A-Za-z0-9])", gpu_name, re.IGNORECASE) is not None


def gib(n: int | float) -> str:
    return f"{n / GiB:.1f} GiB"
