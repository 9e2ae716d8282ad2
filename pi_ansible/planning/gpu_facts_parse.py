"""Pure parsing of `nvidia-smi` text into GPU facts.

The fact module runs the commands; everything here is a function of their text, so tests feed
it real captured outputs (tests/fixtures/nvidia-smi/). Nothing here raises on odd input: a value
that cannot be read becomes None.
"""

from __future__ import annotations

import re

# What the fact module asks for. One row per physical GPU; MIG instances get no row of their own.
QUERY_GPU_FIELDS = (
    "index", "uuid", "name", "pci.bus_id", "memory.total", "memory.reserved", "memory.used",
    "memory.free", "utilization.gpu", "driver_version", "compute_cap", "mig.mode.current",
)
QUERY_APPS_FIELDS = ("pid", "process_name", "gpu_uuid", "used_memory")

# field as queried (aliases included) -> (fact key, kind)
_GPU_KEYS = {
    "index": ("index", "int"),
    "uuid": ("uuid", "str"), "gpu_uuid": ("uuid", "str"),
    "name": ("name", "str"), "gpu_name": ("name", "str"),
    "pci.bus_id": ("pci_bus_id", "str"), "gpu_bus_id": ("pci_bus_id", "str"),
    "memory.total": ("memory_total_mib", "int"),
    "memory.reserved": ("memory_reserved_mib", "int"),
    "memory.used": ("memory_used_mib", "int"),
    "memory.free": ("memory_free_mib", "int"),
    "utilization.gpu": ("utilization_gpu_pct", "int"),
    "utilization.memory": ("utilization_memory_pct", "int"),
    "driver_version": ("driver_version", "str"),
    "compute_cap": ("compute_cap", "str"),
    "mig.mode.current": ("mig_mode", "str"),
    "mig.mode.pending": ("mig_mode_pending", "str"),
    "temperature.gpu": ("temperature_c", "int"),
    "power.draw": ("power_draw_w", "float"),
    "power.limit": ("power_limit_w", "float"),
    "serial": ("serial", "str"), "gpu_serial": ("serial", "str"),
    "pstate": ("pstate", "str"),
    "count": ("count", "int"),
}
_GPU_DEFAULT_KEYS = ("index", "uuid", "name", "pci_bus_id", "memory_total_mib", "memory_reserved_mib",
                     "memory_used_mib", "memory_free_mib", "utilization_gpu_pct", "driver_version",
                     "compute_cap", "mig_mode", "mig_enabled")

_APP_KEYS = {
    "pid": ("pid", "int"),
    "process_name": ("process_name", "str"), "name": ("process_name", "str"),
    "gpu_uuid": ("gpu_uuid", "str"),
    "used_memory": ("used_memory_mib", "int"), "used_gpu_memory": ("used_memory_mib", "int"),
    "gpu_name": ("gpu_name", "str"),
    "gpu_bus_id": ("gpu_bus_id", "str"),
    "gpu_serial": ("gpu_serial", "str"),
    "timestamp": ("timestamp", "str"),
}
_APP_DEFAULT_KEYS = ("pid", "process_name", "gpu_uuid", "used_memory_mib")

# Cell texts that stand for "no value" (bracketed since driver ~450, bare before).
_MISSING = {"", "n/a", "[n/a]", "not supported", "[not supported]", "unknown error", "[unknown error]",
            "insufficient permissions", "[insufficient permissions]", "not found", "[not found]"}
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:MiB|KiB|GiB|%|W|C|MHz)?\s*$")
_HEADER_UNIT = re.compile(r"\s*\[[^\]]*\]\s*$")


def _missing(cell: str) -> bool:
    return cell.strip().lower() in _MISSING


def _convert(cell: str, kind: str):
    if _missing(cell):
        return None
    cell = cell.strip()
    if kind == "str":
        return cell
    m = _NUMBER.match(cell)
    if not m:
        return None
    try:
        return int(float(m.group(1))) if kind == "int" else float(m.group(1))
    except ValueError:
        return None


def _split(line: str) -> list[str]:
    # Separator is ", "; some builds pad numbers to align columns, so strip every cell.
    return [c.strip() for c in line.split(",")]


def _header_fields(cells: list[str], known: dict) -> list[str] | None:
    """The field names if this line is a CSV header, else None."""
    names = [_HEADER_UNIT.sub("", c).strip() for c in cells]
    if names and all(n and not _NUMBER.match(n) for n in names) and any(n in known for n in names):
        return names
    return None


def _rows(text: str, fields, known: dict, default_fields) -> list[dict]:
    if not isinstance(text, str):
        return []
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines:
        return []
    header = _header_fields(_split(lines[0]), known)
    if header is not None:
        fields, lines = header, lines[1:]
    fields = list(fields or default_fields)
    rows = []
    for line in lines:
        cells = _split(line)
        if len(cells) != len(fields):
            continue  # not a data row of this query (an error text, a ragged line)
        row = {}
        for field, cell in zip(fields, cells, strict=True):
            key, kind = known.get(field, (field.replace(".", "_"), "str"))
            row[key] = _convert(cell, kind)
        rows.append(row)
    return rows


def parse_query_gpu(csv_text: str, fields=None) -> list[dict]:
    """Rows of `--query-gpu=… --format=csv[,noheader][,nounits]`, one dict per GPU.

    A header line, when present, names the fields; without one, `fields` (default QUERY_GPU_FIELDS)
    gives their order. Units (`81559 MiB`, `0 %`) are dropped, `[N/A]`/`[Not Supported]` become None.
    """
    gpus = []
    for row in _rows(csv_text, fields, _GPU_KEYS, QUERY_GPU_FIELDS):
        for key in _GPU_DEFAULT_KEYS:
            row.setdefault(key, None)
        mode = row.get("mig_mode")
        row["mig_enabled"] = None if mode is None else mode.lower() == "enabled"
        has_uuid = isinstance(row.get("uuid"), str) and row["uuid"].startswith(("GPU-", "MIG-"))
        if not has_uuid and row.get("index") is None:
            continue  # no way to tell which GPU this is: not a GPU row
        gpus.append(row)
    return gpus


def parse_compute_apps(csv_text: str, fields=None) -> list[dict]:
    """Rows of `--query-compute-apps=… --format=csv[…]`. With MIG, `gpu_uuid` is the parent GPU's."""
    apps = []
    for row in _rows(csv_text, fields, _APP_KEYS, QUERY_APPS_FIELDS):
        for key in _APP_DEFAULT_KEYS:
            row.setdefault(key, None)
        if row.get("pid") is None:
            continue
        apps.append(row)
    return apps


_DRIVER_RES = (
    re.compile(r"(?:Driver|KMD) Version:\s*([0-9]+(?:\.[0-9]+)+)"),         # table header (610+: KMD)
    re.compile(r"^\s*DRIVER version\s*:\s*([0-9]+(?:\.[0-9]+)+)", re.M),   # --version
    re.compile(r"^\s*Driver Version\s*:\s*([0-9]+(?:\.[0-9]+)+)", re.M),   # -q
    re.compile(r"<driver_version>\s*([0-9]+(?:\.[0-9]+)+)\s*</driver_version>"),  # -q -x
)
_CUDA_RES = (
    re.compile(r"CUDA (?:UMD )?Version:\s*([0-9]+\.[0-9]+)"),
    re.compile(r"^\s*CUDA Version\s*:\s*([0-9]+\.[0-9]+)", re.M),
    re.compile(r"<cuda_version>\s*([0-9]+\.[0-9]+)\s*</cuda_version>"),
)


def _first(res, text: str):
    for rx in res:
        m = rx.search(text)
        if m:
            return m.group(1)
    return None


def parse_header_versions(plain_table_text: str) -> tuple[str | None, str | None]:
    """(driver_version, cuda_version) from the plain table header; also reads `--version`, `-q`
    and `-q -x` text. The CUDA version is the newest CUDA runtime the driver supports; there is
    no `--query-gpu` field for it."""
    if not isinstance(plain_table_text, str):
        return None, None
    return _first(_DRIVER_RES, plain_table_text), _first(_CUDA_RES, plain_table_text)


_FIXES = {
    "not_installed": "nvidia-smi is not on this host: install the NVIDIA driver (it ships nvidia-smi), then run again.",
    "no_driver": ("nvidia-smi cannot talk to the NVIDIA kernel driver: the driver is not installed or its "
                  "kernel module is not loaded. Install the driver (for example "
                  "`ubuntu-drivers install --gpgpu`), reboot, and check `lsmod | grep nvidia`."),
    "mismatch": ("the NVIDIA user-space libraries{lib} do not match the loaded kernel module (typically after a "
                 "driver upgrade without a reboot). Reboot the host, or unload and reload the nvidia modules, "
                 "so both are the same version."),
    "no_devices": ("the NVIDIA driver is loaded but sees no GPU. In a container, pass the GPUs in "
                   "(`--gpus all` or CDI); on a host, check `lspci | grep -i nvidia` and `dmesg | grep -i nvrm`."),
    "lib_missing": ("nvidia-smi is installed but libnvidia-ml.so (NVML) is missing or not on the library path: "
                    "install the driver's NVML library package matching the driver version."),
}


def classify_failure(stdout: str, rc: int) -> tuple[str | None, str | None]:
    """(kind, message with the fix) for a failed nvidia-smi run, or (None, None) when it worked.

    kind is one of not_installed, no_driver, mismatch, no_devices, lib_missing, unknown.
    nvidia-smi prints its failures to stdout, so pass stdout (stderr appended does no harm).
    """
    text = stdout if isinstance(stdout, str) else ""
    low = text.lower()
    try:
        rc = int(rc)
    except (TypeError, ValueError):
        rc = -1
    kind = None
    if "couldn't communicate with the nvidia driver" in low:
        kind = "no_driver"
    elif "driver/library version mismatch" in low:
        kind = "mismatch"
    elif "couldn't find libnvidia-ml.so" in low:
        kind = "lib_missing"
    elif "no devices were found" in low or "no supported gpus were found" in low:
        kind = "no_devices"
    elif rc == 127 or "command not found" in low or ("no such file or directory" in low and "nvidia-smi" in low):
        kind = "not_installed"
    elif rc == 0:
        return None, None
    elif rc == 9:
        kind = "no_driver"
    elif rc == 18:
        kind = "mismatch"
    elif rc == 12:
        kind = "lib_missing"
    elif rc == 6:
        kind = "no_devices"
    else:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "no output")
        return "unknown", f"nvidia-smi failed (exit {rc}): {first}"
    fix = _FIXES[kind]
    if kind == "mismatch":
        m = re.search(r"NVML library version:\s*([0-9.]+)", text)
        fix = fix.format(lib=f" ({m.group(1)})" if m else "")
    return kind, fix


def build_facts(query_gpu_text: str, rc: int = 0, header_text: str = "", compute_apps_text: str = "",
                fields=None, app_fields=None) -> dict:
    """One facts dict from the outputs of `--query-gpu`, the plain table (or `--version`) and
    `--query-compute-apps`: {gpus, driver_version, cuda_version, mig_enabled, processes, failure}.

    `rc` is the exit code of the `--query-gpu` run. failure is None or {"kind", "message"}.
    """
    facts = {"gpus": [], "driver_version": None, "cuda_version": None, "mig_enabled": False,
             "processes": [], "failure": None}
    kind, message = classify_failure(query_gpu_text, rc)
    if kind is None and isinstance(header_text, str) and header_text:
        # The header command can fail even when the query looked fine (e.g. a race with an unload).
        kind, message = classify_failure(header_text, 0)
    if kind is not None:
        facts["failure"] = {"kind": kind, "message": message}
        return facts
    gpus = parse_query_gpu(query_gpu_text, fields)
    driver, cuda = parse_header_versions(header_text or "")
    facts["gpus"] = gpus
    facts["driver_version"] = next((g["driver_version"] for g in gpus if g.get("driver_version")), None) or driver
    facts["cuda_version"] = cuda
    facts["mig_enabled"] = any(g.get("mig_enabled") for g in gpus)
    index_of = {g["uuid"]: g.get("index") for g in gpus if g.get("uuid")}
    procs = parse_compute_apps(compute_apps_text or "", app_fields)
    for p in procs:
        p["gpu_index"] = index_of.get(p.get("gpu_uuid"))
    facts["processes"] = procs
    if not gpus:
        facts["failure"] = {"kind": "no_devices", "message": _FIXES["no_devices"]}
    return facts


# The three nvidia-smi calls GPU facts come from: {key: arguments}.
SMI_CALLS = {
    "gpus": ["--query-gpu=" + ",".join(QUERY_GPU_FIELDS), "--format=csv,noheader,nounits"],
    "apps": ["--query-compute-apps=" + ",".join(QUERY_APPS_FIELDS), "--format=csv,noheader,nounits"],
    "table": [],
}


def facts_from_runs(runs: dict) -> dict:
    """pi_gpus from {key of SMI_CALLS: (rc, stdout, stderr)}."""
    return build_facts(runs["gpus"][1], rc=runs["gpus"][0], header_text=runs["table"][1],
                       compute_apps_text=runs["apps"][1])


def gather(run) -> dict:
    """pi_gpus from the three nvidia-smi calls the fact modules make; RUN(argv) returns (rc, stdout, stderr)
    for nvidia-smi with those arguments (the caller owns the I/O and the locale)."""
    return facts_from_runs({key: run(args) for key, args in SMI_CALLS.items()})
