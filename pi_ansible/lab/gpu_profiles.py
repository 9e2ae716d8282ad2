"""GPU profiles for the lab: one per test pod, read by the `nvidia-smi` double.

Each profile is the JSON document the double reads from `$PI_LAB_GPU_PROFILE`
(shape: `pi_ansible/lab/README.md`). Numbers come from real captures
(`tests/fixtures/nvidia-smi/SOURCES.md`, `vllm-facts.md` section 1) so that the
fact module meets the values a real GPU reports.
"""

from __future__ import annotations

import copy
import hashlib


def _uuid(prefix: str, seed: str) -> str:
    # Deterministic per profile and index, in the real `GPU-8-4-4-4-12` lowercase-hex shape.
    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"{prefix}-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _gpu(profile: str, index: int, **fields) -> dict:
    gpu = {
        "index": index,
        "uuid": _uuid("GPU", f"{profile}:{index}"),
        "mig": False,
        "mig_devices": [],
    }
    gpu.update(fields)
    return gpu


def _h100(profile: str, index: int, pci_bus_id: str) -> dict:
    return _gpu(
        profile, index,
        name="NVIDIA H100 80GB HBM3", pci_bus_id=pci_bus_id,
        memory_total_mib=81559, memory_reserved_mib=479, compute_cap="9.0",
        power_limit_w=700, power_draw_w=69, temperature_c=41 + index,
        persistence_mode=True, ecc_errors=0,
    )


def _h200(profile: str, index: int, pci_bus_id: str) -> dict:
    return _gpu(
        profile, index,
        name="NVIDIA H200", pci_bus_id=pci_bus_id,
        memory_total_mib=143771, memory_reserved_mib=614, compute_cap="9.0",
        power_limit_w=700, power_draw_w=76, temperature_c=30 + index,
        persistence_mode=True, ecc_errors=0,
    )


# DGX-style bus ids for an 8-GPU HGX board.
_HGX8_BUSES = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]


def _h100_mig() -> dict:
    gpu = _h100("h100-mig", 0, "00000000:00:09.0")
    gpu["mig"] = True
    # Layout of the real H100 MIG capture (3g.40gb + 2g.20gb + 1g.10gb, driver 590.48.01).
    specs = [
        # profile, gpu_instance_id, memory_total_mib, sm, ce, enc, dec, ofa, jpg, bar1
        ("3g.40gb", 2, 40448, 60, 3, 0, 3, 0, 3, 32767),
        ("2g.20gb", 3, 20096, 32, 2, 0, 2, 0, 2, 16383),
        ("1g.10gb", 9, 9984, 16, 1, 0, 1, 0, 1, 8191),
    ]
    gpu["mig_devices"] = [
        {
            "index": i, "profile": p, "uuid": _uuid("MIG", f"h100-mig:0:{i}"),
            "gpu_instance_id": gi, "compute_instance_id": 0,
            "memory_total_mib": mem, "sm": sm, "ce": ce, "enc": enc, "dec": dec,
            "ofa": ofa, "jpg": jpg, "bar1_total_mib": bar1,
        }
        for i, (p, gi, mem, sm, ce, enc, dec, ofa, jpg, bar1) in enumerate(specs)
    ]
    return gpu


PROFILES: dict[str, dict] = {
    "h100x2": {
        "name": "h100x2", "driver_version": "590.48.01", "cuda_version": "13.1", "failure": None,
        "gpus": [_h100("h100x2", 0, "00000000:00:09.0"), _h100("h100x2", 1, "00000000:00:0A.0")],
    },
    "rtx4090": {
        "name": "rtx4090", "driver_version": "550.144.03", "cuda_version": "12.4", "failure": None,
        "gpus": [_gpu(
            "rtx4090", 0, name="NVIDIA GeForce RTX 4090", pci_bus_id="00000000:01:00.0",
            memory_total_mib=24564, memory_reserved_mib=0, compute_cap="8.9",
            power_limit_w=450, power_draw_w=24, temperature_c=36,
            persistence_mode=False, ecc_errors=None,
        )],
    },
    "h200x8": {
        "name": "h200x8", "driver_version": "580.126.09", "cuda_version": "13.0", "failure": None,
        "gpus": [_h200("h200x8", i, f"00000000:{bus}:00.0") for i, bus in enumerate(_HGX8_BUSES)],
    },
    "h100-mig": {
        "name": "h100-mig", "driver_version": "590.48.01", "cuda_version": "13.1", "failure": None,
        "gpus": [_h100_mig()],
    },
    "mismatch": {
        "name": "mismatch", "driver_version": "590.48.01", "cuda_version": "13.1", "failure": "mismatch",
        "nvml_library_version": "590.48",
        "gpus": [_h100("mismatch", 0, "00000000:00:09.0")],
    },
    "nodevices": {
        "name": "nodevices", "driver_version": "590.48.01", "cuda_version": "13.1", "failure": "no_devices",
        "gpus": [],
    },
    "no_driver": {
        "name": "no_driver", "driver_version": None, "cuda_version": None, "failure": "no_driver",
        "gpus": [],
    },
}

DEFAULT_ORDER = ["h100x2", "rtx4090", "h200x8", "h100-mig", "mismatch", "nodevices"]


def profile(name: str) -> dict:
    """A deep copy of one profile, safe to mutate (tests, pod setup)."""
    return copy.deepcopy(PROFILES[name])
