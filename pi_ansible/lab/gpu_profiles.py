"""GPU profiles for the lab: one per test pod, read by the `nvidia-smi` double.

Each profile is the JSON document the double reads from `$PI_LAB_GPU_PROFILE`
(shape: `pi_ansible/lab/README.md`). Numbers come from real captures
(`tests/fixtures/nvidia-smi/SOURCES.md`, `vllm-facts.md` section 1) so that the
fact module meets the values a real GPU reports. Keys beyond the README contract
(pstate, fan, ECC, MIG layout, ...) are optional; `doubles/nvidia_smi.py` lists them.
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


# What the plain table and `--query-gpu` show for a datacenter part with the driver set up as
# on the real H100/H200 captures: persistence on, ECC on, MIG-capable, no fan, no display.
_DATACENTER = {
    "persistence_mode": True, "display_active": False, "ecc": "on", "mig_capable": True,
    "fan_speed_pct": None, "pstate": "P0", "utilization_gpu_pct": 0, "utilization_memory_pct": 0,
    "product_brand": "NVIDIA", "architecture": "Hopper",
}


def _h100(profile: str, index: int, pci_bus_id: str) -> dict:
    return _gpu(
        profile, index,
        name="NVIDIA H100 80GB HBM3", pci_bus_id=pci_bus_id,
        memory_total_mib=81559, memory_reserved_mib=479, compute_cap="9.0",
        power_limit_w=700, power_draw_w=69.85, temperature_c=41 + index,
        **_DATACENTER,
    )


def _h200(profile: str, index: int, pci_bus_id: str) -> dict:
    return _gpu(
        profile, index,
        name="NVIDIA H200", pci_bus_id=pci_bus_id,
        memory_total_mib=143771, memory_reserved_mib=614, compute_cap="9.0",
        power_limit_w=700, power_draw_w=76.12, temperature_c=30 + index,
        **_DATACENTER,
    )


# DGX-style bus ids for an 8-GPU HGX board.
_HGX8_BUSES = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]


def _h100_mig() -> dict:
    gpu = _h100("h100-mig", 0, "00000000:00:09.0")
    gpu["mig"] = True
    # Layout of the real H100 MIG capture (3g.40gb + 2g.20gb + 1g.10gb, driver 590.48.01).
    gpu["memory_used_base_mib"] = 59
    gpu["utilization_gpu_pct"] = None
    gpu["power_draw_w"] = 98.4
    gpu["temperature_c"] = 42
    specs = [
        # profile, gpu_instance_id, memory_total_mib, sm, ce, enc, dec, ofa, jpg, bar1, idle used
        ("3g.40gb", 2, 40448, 60, 3, 0, 3, 0, 3, 24739, 26),
        ("2g.20gb", 3, 20096, 32, 2, 0, 2, 0, 2, 12369, 17),
        ("1g.10gb", 9, 9984, 16, 1, 0, 1, 0, 1, 6184, 9),
        ("1g.10gb", 10, 9984, 16, 1, 0, 1, 0, 1, 6184, 9),
    ]
    gpu["mig_devices"] = [
        {
            "index": i, "profile": p, "uuid": _uuid("MIG", f"h100-mig:0:{i}"),
            "gpu_instance_id": gi, "compute_instance_id": 0,
            "memory_total_mib": mem, "sm": sm, "ce": ce, "enc": enc, "dec": dec,
            "ofa": ofa, "jpg": jpg, "bar1_total_mib": bar1, "memory_used_base_mib": base,
        }
        for i, (p, gi, mem, sm, ce, enc, dec, ofa, jpg, bar1, base) in enumerate(specs)
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
            # 346 MiB reserved: a real RTX 4090 on 535.86.05 (netdata testdata, see SOURCES.md)
            memory_total_mib=24564, memory_reserved_mib=346, compute_cap="8.9",
            power_limit_w=450, power_draw_w=14.62, temperature_c=44,
            persistence_mode=False, display_active=False, ecc="off", mig_capable=False,
            fan_speed_pct=0, pstate="P8", utilization_gpu_pct=0, utilization_memory_pct=0,
            product_brand="GeForce", architecture="Ada Lovelace",
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
        # user-space libraries upgraded to 590.48.01 while the old kernel module is still loaded
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
