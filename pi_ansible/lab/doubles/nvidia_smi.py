#!/usr/bin/python3
"""A stand-in for `nvidia-smi` in lab pods that have no GPU.

Installed in a pod as /usr/bin/nvidia-smi; stdlib only, so it runs on any python3.
It prints what the real tool prints, byte for byte, for the commands our roles and
fact module run. Layouts, widths and texts come from real captures:
tests/fixtures/nvidia-smi/SOURCES.md lists them.

Inputs (see pi_ansible/lab/README.md):
  $PI_LAB_GPU_PROFILE  JSON profile (default /etc/pi-lab/gpu-profile.json)
  $PI_LAB_GPU_STATE    directory of <pid>.json files written by engine doubles
                       (default /run/pi-lab/gpu); files of dead pids are ignored

Optional profile keys beyond the README contract, per GPU (defaults in brackets):
  persistence_mode [False], display_active [False], ecc ["on"|"off"|None: N/A] [None],
  mig_capable [False], fan_speed_pct [None: N/A], pstate ["P0"], power_draw_w [0],
  temperature_c [30], utilization_gpu_pct [0], utilization_memory_pct [0],
  memory_used_base_mib [0] (driver contexts counted as used), memory_free_adjust_mib [0]
  (real GPUs report free 1-2 MiB above total-reserved-used: byte rounding), serial [None],
  product_brand ["NVIDIA"], architecture ["N/A"].
  Per process (state file or render()'s procs): type ["C"]; "G" rows show in the table only.
  Per MIG device: index, profile, uuid, gpu_instance_id, compute_instance_id,
  memory_total_mib, memory_used_base_mib, bar1_total_mib, sm, ce, enc, dec, ofa, jpg.
"""

from __future__ import annotations

import datetime
import json
import os
import sys

DEFAULT_PROFILE = "/etc/pi-lab/gpu-profile.json"
DEFAULT_STATE = "/run/pi-lab/gpu"

# Texts of real failures (SOURCES.md: captured from Debian's nvidia-smi 535.261.03, and issue logs).
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n\n"
)
MISMATCH = "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: {}\n"
NO_DEVICES = "No devices were found\n"
BAD_ARGS = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n"

RC_OK, RC_BAD_ARGS, RC_NOT_FOUND, RC_NO_DRIVER, RC_MISMATCH = 0, 2, 6, 9, 18


# ---------------------------------------------------------------------------------------------
# The state of the machine: profile + live processes -> per-GPU numbers


def _gpu_state(profile: dict, procs: list[dict]) -> list[dict]:
    """One dict per GPU with memory and processes resolved."""
    gpus = []
    by_uuid: dict[str, tuple[dict, dict | None]] = {}
    for g in profile.get("gpus") or []:
        st = {"gpu": g, "procs": [], "mig": []}
        for m in g.get("mig_devices") or [] if g.get("mig") else []:
            ms = {"dev": m, "used": int(m.get("memory_used_base_mib") or 0)}
            st["mig"].append(ms)
            by_uuid[m.get("uuid", "")] = (st, ms)
        by_uuid[g.get("uuid", "")] = (st, st["mig"][0] if st["mig"] else None)
        gpus.append(st)
    for p in procs:
        for use in p.get("gpus") or []:
            hit = by_uuid.get(use.get("uuid"))
            if hit is None:
                continue
            st, ms = hit
            mib = int(use.get("used_mib") or 0)
            st["procs"].append({"pid": int(p["pid"]), "name": str(p.get("process_name") or "python"),
                                "used": mib, "mig": ms, "type": str(p.get("type") or "C")})
            if ms is not None:
                ms["used"] += mib
    for st in gpus:
        g = st["gpu"]
        st["procs"].sort(key=lambda r: r["pid"])
        st["used"] = int(g.get("memory_used_base_mib") or 0) + sum(r["used"] for r in st["procs"])
        total = int(g["memory_total_mib"])
        free = total - int(g.get("memory_reserved_mib") or 0) - st["used"] + int(g.get("memory_free_adjust_mib") or 0)
        st["free"] = max(0, free)
    return gpus


def _major(profile: dict) -> int:
    try:
        return int(str(profile.get("driver_version") or "0").split(".")[0])
    except ValueError:
        return 0


def _mig_on(g: dict) -> bool:
    return bool(g.get("mig"))


def _mig_mode(g: dict) -> str | None:
    if _mig_on(g):
        return "Enabled"
    return "Disabled" if g.get("mig_capable") else None


def _util(g: dict) -> int | None:
    # MIG hides whole-GPU utilization (captures: `[N/A]` / `N/A`).
    return None if _mig_on(g) else g.get("utilization_gpu_pct", 0)


def _timestamp_line(now: datetime.datetime) -> str:
    return f"{now:%a %b} {now.day:>2} {now:%H:%M:%S %Y}"


# ---------------------------------------------------------------------------------------------
# Plain table


class _Layout:
    """Column widths of one driver branch (535 narrow; 550; 570; 580 and later)."""

    def __init__(self, major: int):
        self.narrow = major < 550
        self.inner = 87 if self.narrow else 89
        self.bus_w = 22 if self.narrow else 24
        self.plus_header = major >= 580
        self.spacer = "" if major >= 580 else " " * 89
        self.wide_pid = major >= 570
        self.new_mig = major >= 580


_PROC_HEADERS = {
    # (narrow, wide_pid): the two header lines, as printed
    (True, False): ("  GPU   GI   CI        PID   Type   Process name                            GPU Memory ",
                    "        ID   ID                                                             Usage      "),
    (False, False): ("  GPU   GI   CI        PID   Type   Process name                              GPU Memory ",
                     "        ID   ID                                                               Usage      "),
    (False, True): ("  GPU   GI   CI              PID   Type   Process name                        GPU Memory ",
                    "        ID   ID                                                               Usage      "),
}

_MIG_HEAD_NEW = (
    "| GPU  GI  CI  MIG |              Shared Memory-Usage |        Vol|        Shared         |",
    "|      ID  ID  Dev |                Shared BAR1-Usage | SM     Unc| CE ENC  DEC  OFA  JPG |",
    "|                  |                                  |        ECC|                       |",
)
_MIG_HEAD_OLD = (
    "| GPU  GI  CI  MIG |                     Memory-Usage |        Vol|      Shared           |",
    "|      ID  ID  Dev |                       BAR1-Usage | SM     Unc| CE ENC DEC OFA JPG    |",
    "|                  |                                  |        ECC|                       |",
)


def _gpu_name_cell(name: str) -> str:
    # The table keeps 27 characters of a name: longer ones become their first 24 + "...".
    return name if len(name) <= 27 else name[:24] + "..."


def _ecc_cell(g: dict) -> str:
    if _mig_on(g):
        return "On"
    ecc = g.get("ecc")
    if ecc == "on":
        return str(g.get("ecc_errors", 0))
    return "Off" if ecc == "off" else "N/A"


def _render_table(profile: dict, gpus: list[dict], now: datetime.datetime) -> str:
    lay = _Layout(_major(profile))
    w = lay.inner
    drv = str(profile.get("driver_version") or "")
    cuda = str(profile.get("cuda_version") or "")
    seg = (41, lay.bus_w, 22)
    border = "+" + "+".join("-" * s for s in seg) + "+"
    out = [_timestamp_line(now) + "       "]
    out.append("+" + "-" * w + "+")
    dfield = 13 if lay.narrow else 15
    out.append(f"| NVIDIA-SMI {drv:<23}Driver Version: {drv:<{dfield}}CUDA Version: {cuda:<9}|")
    out.append(border if lay.plus_header else "|" + "+".join("-" * s for s in seg) + "+")
    heads = [("GPU  Name                 Persistence-M", "Bus-Id          Disp.A", "Volatile Uncorr. ECC"),
             ("Fan  Temp   Perf          Pwr:Usage/Cap", "          Memory-Usage", "GPU-Util  Compute M."),
             ("", "", "MIG M.")]
    for a, b, c in heads:
        if lay.narrow:
            b = b.replace("Bus-Id          Disp.A", "Bus-Id        Disp.A").replace("          Memory-Usage", "        Memory-Usage")
        out.append(f"| {a:<39} | {b:>{lay.bus_w - 2}} | {c:>20} |")
    out.append("|" + "+".join("=" * s for s in seg) + "|")
    for st in gpus:
        g = st["gpu"]
        pm = "On" if g.get("persistence_mode") else "Off"
        disp = "On" if g.get("display_active") else "Off"
        name = _gpu_name_cell(str(g["name"]))
        c1 = f"{g['index']:>4}  {name:<31}{pm:<3} "
        c2 = f"{' ' if lay.narrow else '   '}{g['pci_bus_id']} {disp:>3} "
        c3 = f" {_ecc_cell(g):>20} "
        out.append(f"|{c1}|{c2}|{c3}|")
        fan = "N/A" if g.get("fan_speed_pct") is None else f"{g['fan_speed_pct']}%"
        temp = f"{int(g.get('temperature_c', 30))}C"
        draw = g.get("power_draw_w")
        draw_s = "N/A" if draw is None else f"{int(draw)}W"
        cap = f"{int(g.get('power_limit_w') or 0)}W"
        pw, cw = (17, 4) if lay.narrow else (16, 5)
        c1 = f" {fan:>3}   {temp:>3}    {g.get('pstate', 'P0'):<2}{draw_s:>{pw}} / {cap:>{cw}} "
        uw, tw = (10, 8) if lay.narrow else (11, 9)
        c2 = f"{str(st['used']) + 'MiB':>{uw}} / {str(g['memory_total_mib']) + 'MiB':>{tw}} "
        util = _util(g)
        util_s = "N/A" if util is None else f"{util}%"
        c3 = f"{util_s:>8}{'Default':>13} "
        out.append(f"|{c1}|{c2}|{c3}|")
        mig = _mig_mode(g) or "N/A"
        out.append(f"|{' ' * 41}|{' ' * lay.bus_w}| {mig:>20} |")
        out.append(border)
    mig_gpus = [st for st in gpus if st["mig"]]
    if mig_gpus:
        if lay.new_mig:
            out.append("")
        out.extend(_mig_table(mig_gpus, lay))
    out.append(lay.spacer)
    out.extend(_proc_table(gpus, lay))
    return "\n".join(out) + "\n"


def _mig_table(gpus: list[dict], lay: _Layout) -> list[str]:
    sep = "+------------------+----------------------------------+-----------+-----------------------+"
    out = ["+" + "-" * 89 + "+", "|" + " MIG devices:".ljust(89) + "|", sep]
    out.extend(_MIG_HEAD_NEW if lay.new_mig else _MIG_HEAD_OLD)
    out.append("|==================+==================================+===========+=======================|")
    for st in gpus:
        idx = st["gpu"]["index"]
        for ms in st["mig"]:
            m = ms["dev"]
            c1 = f"{idx:>3}{m.get('gpu_instance_id', 0):>5}{m.get('compute_instance_id', 0):>4}{m.get('index', 0):>4}  "
            c2 = f"{str(ms['used']) + 'MiB':>19} / {str(m.get('memory_total_mib', 0)) + 'MiB':>8}    "
            c3 = f" {m.get('sm', 0):<3}{0:>6} "
            c4 = f"{m.get('ce', 0):>3}{m.get('enc', 0):>4}{m.get('dec', 0):>5}{m.get('ofa', 0):>5}{m.get('jpg', 0):>5} "
            out.append(f"|{c1}|{c2}|{c3}|{c4}|")
            bar1 = str(m.get("bar1_total_mib", 0)) + "MiB"
            b2 = f"{'0MiB':>19} / {bar1:>8}    " if lay.new_mig else f"{'0MiB':>21} / {bar1:>8}  "
            out.append(f"|{' ' * 18}|{b2}|{' ' * 11}|{' ' * 23}|")
            out.append(sep)
    return out


def _proc_table(gpus: list[dict], lay: _Layout) -> list[str]:
    w = lay.inner
    h1, h2 = _PROC_HEADERS[(lay.narrow, lay.wide_pid)]
    out = ["+" + "-" * w + "+", "|" + " Processes:".ljust(w) + "|", "|" + h1 + "|", "|" + h2 + "|",
           "|" + "=" * w + "|"]
    pid_w = 16 if lay.wide_pid else 10
    name_start = 5 + 11 + pid_w + 7 + 3
    mem_col = w - 11  # "GPU Memory" column: 10 wide, then the trailing space
    rows = 0
    for st in gpus:
        for r in st["procs"]:
            ms = r["mig"]
            if ms is None:
                gici = "   N/A  N/A"
            else:
                gici = f"{ms['dev'].get('gpu_instance_id', 0):>5}{ms['dev'].get('compute_instance_id', 0):>5} "
            name = r["name"]
            room = mem_col - name_start - 1
            if len(name) > room:
                name = "..." + name[-(room - 3):]
            mem = f"{r['used']}MiB"
            head = f"{st['gpu']['index']:>5}{gici}{r['pid']:>{pid_w}}{r['type']:>7}   "
            out.append("|" + head + name + mem.rjust(w - 1 - len(head) - len(name)) + " |")
            rows += 1
    if not rows:
        out.append("|" + "  No running processes found".ljust(w) + "|")
    out.append("+" + "-" * w + "+")
    return out


# ---------------------------------------------------------------------------------------------
# --query-gpu / --query-compute-apps


def _gpu_fields(profile: dict, gpus: list[dict], now: datetime.datetime) -> dict:
    """field name -> (header, unit, getter(state))."""
    def g(key, default=None):
        return lambda st: st["gpu"].get(key, default)

    def onoff(key):
        return lambda st: "Enabled" if st["gpu"].get(key) else "Disabled"

    def ecc_mode(st):
        e = st["gpu"].get("ecc")
        return None if e is None else ("Enabled" if e == "on" else "Disabled")

    def watts(key):
        return lambda st: None if st["gpu"].get(key) is None else f"{float(st['gpu'][key]):.2f}"

    ts = f"{now:%Y/%m/%d %H:%M:%S}.{now.microsecond // 1000:03d}"
    fields = {
        "timestamp": ("timestamp", None, lambda st: ts),
        "driver_version": ("driver_version", None, lambda st: profile.get("driver_version")),
        "count": ("count", None, lambda st: len(gpus)),
        "name": ("name", None, g("name")),
        "serial": ("serial", None, g("serial")),
        "uuid": ("uuid", None, g("uuid")),
        "pci.bus_id": ("pci.bus_id", None, g("pci_bus_id")),
        "index": ("index", None, g("index")),
        "display_active": ("display_active", None, onoff("display_active")),
        "persistence_mode": ("persistence_mode", None, onoff("persistence_mode")),
        "fan.speed": ("fan.speed", "%", g("fan_speed_pct")),
        "pstate": ("pstate", None, g("pstate", "P0")),
        "memory.total": ("memory.total", "MiB", g("memory_total_mib")),
        "memory.reserved": ("memory.reserved", "MiB", g("memory_reserved_mib", 0)),
        "memory.used": ("memory.used", "MiB", lambda st: st["used"]),
        "memory.free": ("memory.free", "MiB", lambda st: st["free"]),
        "compute_mode": ("compute_mode", None, lambda st: "Default"),
        "compute_cap": ("compute_cap", None, g("compute_cap")),
        "utilization.gpu": ("utilization.gpu", "%", _util_getter),
        "utilization.memory": ("utilization.memory", "%",
                               lambda st: None if _mig_on(st["gpu"]) else st["gpu"].get("utilization_memory_pct", 0)),
        "ecc.mode.current": ("ecc.mode.current", None, ecc_mode),
        "ecc.mode.pending": ("ecc.mode.pending", None, ecc_mode),
        "temperature.gpu": ("temperature.gpu", None, lambda st: int(st["gpu"].get("temperature_c", 30))),
        "power.draw": ("power.draw", "W", watts("power_draw_w")),
        "power.limit": ("power.limit", "W", watts("power_limit_w")),
        "enforced.power.limit": ("enforced.power.limit", "W", watts("power_limit_w")),
        "mig.mode.current": ("mig.mode.current", None, lambda st: _mig_mode(st["gpu"])),
        "mig.mode.pending": ("mig.mode.pending", None, lambda st: _mig_mode(st["gpu"])),
    }
    # Aliases print their own name in the header (verified for gpu_name / gpu_uuid).
    for alias, real in (("gpu_name", "name"), ("gpu_uuid", "uuid"), ("gpu_bus_id", "pci.bus_id"),
                        ("gpu_serial", "serial")):
        _, unit, get = fields[real]
        fields[alias] = (alias, unit, get)
    return fields


def _util_getter(st):
    return _util(st["gpu"])


def _cell(value, unit, nounits: bool) -> str:
    if value is None:
        return "[N/A]"
    if unit is None or nounits:
        return str(value)
    return f"{value} {unit}"


def _header(name: str, unit: str | None) -> str:
    return name if unit is None else f"{name} [{unit}]"


def _csv(headers: list[str], rows: list[list[str]], fmt: set[str]) -> str:
    lines = [] if "noheader" in fmt else [", ".join(headers)]
    lines += [", ".join(r) for r in rows]
    return "".join(line + "\n" for line in lines)


def _query_gpu(fields_arg: str, fmt: set[str], profile: dict, gpus: list[dict], now) -> tuple[str, int]:
    table = _gpu_fields(profile, gpus, now)
    names = [f.strip() for f in fields_arg.split(",") if f.strip()]
    for n in names:
        if n not in table:
            return f'Field "{n}" is not a valid field to query.\n', RC_BAD_ARGS
    nounits = "nounits" in fmt
    headers = [_header(*table[n][:2]) for n in names]
    rows = [[_cell(table[n][2](st), table[n][1], nounits) for n in names] for st in gpus]
    return _csv(headers, rows, fmt), RC_OK


_APP_FIELDS = {
    "timestamp": "timestamp", "gpu_name": "gpu_name", "gpu_bus_id": "gpu_bus_id", "gpu_serial": "gpu_serial",
    "gpu_uuid": "gpu_uuid", "pid": "pid", "process_name": "process_name", "name": "process_name",
    "used_gpu_memory": "used_gpu_memory", "used_memory": "used_gpu_memory",
}


def _query_apps(fields_arg: str, fmt: set[str], gpus: list[dict], now) -> tuple[str, int]:
    names = [f.strip() for f in fields_arg.split(",") if f.strip()]
    for n in names:
        if n not in _APP_FIELDS:
            return f'Field "{n}" is not a valid field to query.\n', RC_BAD_ARGS
    ts = f"{now:%Y/%m/%d %H:%M:%S}.{now.microsecond // 1000:03d}"
    nounits = "nounits" in fmt
    headers = []
    for n in names:
        real = _APP_FIELDS[n]
        headers.append("used_gpu_memory [MiB]" if real == "used_gpu_memory" else real)
    rows = []
    for st in gpus:
        g = st["gpu"]
        for r in st["procs"]:
            if "C" not in r["type"]:
                continue  # graphics-only clients hold no compute context
            vals = {
                "timestamp": ts, "gpu_name": g["name"], "gpu_bus_id": g["pci_bus_id"],
                "gpu_serial": g.get("serial") or "[N/A]", "gpu_uuid": g["uuid"],  # parent GPU, even with MIG
                "pid": str(r["pid"]), "process_name": r["name"],
                "used_gpu_memory": str(r["used"]) if nounits else f"{r['used']} MiB",
            }
            rows.append([vals[_APP_FIELDS[n]] for n in names])
    return _csv(headers, rows, fmt), RC_OK


# ---------------------------------------------------------------------------------------------
# -L, --version, -q, -q -x


def _list(gpus: list[dict]) -> str:
    out = []
    for st in gpus:
        g = st["gpu"]
        out.append(f"GPU {g['index']}: {g['name']} (UUID: {g['uuid']})")
        for ms in st["mig"]:
            m = ms["dev"]
            out.append(f"  MIG {m.get('profile', ''):<12}Device {m.get('index', 0):>2}: (UUID: {m.get('uuid', '')})")
    return "".join(line + "\n" for line in out)


def _version(profile: dict) -> str:
    drv = str(profile.get("driver_version") or "")
    nvml = ".".join(drv.split(".")[:2])
    return (f"NVIDIA-SMI version  : {drv}\nNVML version        : {nvml}\n"
            f"DRIVER version      : {drv}\nCUDA Version        : {profile.get('cuda_version') or ''}\n")


def _query_text(profile: dict, gpus: list[dict], now) -> str:
    # Only the lines a fact module reads; the real -q prints far more.
    kw = 55 if _major(profile) >= 580 else 42

    def kv(key, val, indent=0):
        k = " " * indent + key
        return f"{k:<{kw}}: {val}"

    out = ["", "==============NVSMI LOG==============", "",
           kv("Timestamp", _timestamp_line(now)), kv("Driver Version", profile.get("driver_version")),
           kv("CUDA Version", profile.get("cuda_version")), "", kv("Attached GPUs", len(gpus))]
    for st in gpus:
        g = st["gpu"]
        out += [f"GPU {g['pci_bus_id']}", kv("Product Name", g["name"], 4),
                kv("Persistence Mode", "Enabled" if g.get("persistence_mode") else "Disabled", 4),
                " " * 4 + "MIG Mode", kv("Current", _mig_mode(g) or "N/A", 8), kv("Pending", _mig_mode(g) or "N/A", 8),
                kv("GPU UUID", g["uuid"], 4), kv("Minor Number", g["index"], 4),
                " " * 4 + "FB Memory Usage", kv("Total", f"{g['memory_total_mib']} MiB", 8),
                kv("Reserved", f"{g.get('memory_reserved_mib', 0)} MiB", 8),
                kv("Used", f"{st['used']} MiB", 8), kv("Free", f"{st['free']} MiB", 8)]
    return "\n".join(out) + "\n\n"


def _x(tag: str, val, ind: int) -> str:
    s = "N/A" if val is None else str(val)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"{' ' * ind}<{tag}>{s}</{tag}>"


def _query_xml(profile: dict, gpus: list[dict], now) -> str:
    out = ['<?xml version="1.0" ?>', '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">', "<nvidia_smi_log>",
           _x("timestamp", _timestamp_line(now), 4), _x("driver_version", profile.get("driver_version"), 4),
           _x("cuda_version", profile.get("cuda_version"), 4), _x("attached_gpus", len(gpus), 4)]
    for st in gpus:
        g = st["gpu"]
        bus = g["pci_bus_id"]
        dom, b, devfn = bus.split(":")
        mig = _mig_mode(g)
        out += [f'    <gpu id="{bus}">', _x("product_name", g["name"], 8),
                _x("product_brand", g.get("product_brand", "NVIDIA"), 8),
                _x("product_architecture", g.get("architecture"), 8),
                _x("display_mode", "Disabled", 8),
                _x("display_active", "Enabled" if g.get("display_active") else "Disabled", 8),
                _x("persistence_mode", "Enabled" if g.get("persistence_mode") else "Disabled", 8),
                _x("addressing_mode", "None", 8),
                "        <mig_mode>", _x("current_mig", mig, 12), _x("pending_mig", mig, 12), "        </mig_mode>",
                "        <mig_devices>"]
        if st["mig"]:
            for ms in st["mig"]:
                m = ms["dev"]
                total = int(m.get("memory_total_mib", 0))
                out += ["            <mig_device>", _x("index", m.get("index", 0), 16),
                        _x("gpu_instance_id", m.get("gpu_instance_id", 0), 16),
                        _x("compute_instance_id", m.get("compute_instance_id", 0), 16),
                        "                <device_attributes>", "                    <shared>",
                        _x("multiprocessor_count", m.get("sm", 0), 24), _x("copy_engine_count", m.get("ce", 0), 24),
                        _x("encoder_count", m.get("enc", 0), 24), _x("decoder_count", m.get("dec", 0), 24),
                        _x("ofa_count", m.get("ofa", 0), 24), _x("jpg_count", m.get("jpg", 0), 24),
                        "                    </shared>", "                </device_attributes>",
                        "                <fb_memory_usage>", _x("total", f"{total} MiB", 20),
                        _x("reserved", "0 MiB", 20), _x("used", f"{ms['used']} MiB", 20),
                        _x("free", f"{max(0, total - ms['used'])} MiB", 20), "                </fb_memory_usage>",
                        "            </mig_device>"]
        else:
            out.append("            None")
        out += ["        </mig_devices>",
                _x("accounting_mode", "Disabled", 8), _x("accounting_mode_buffer_size", 4000, 8),
                _x("serial", g.get("serial"), 8), _x("uuid", g["uuid"], 8), _x("minor_number", g["index"], 8),
                "        <pci>", _x("pci_bus", b, 12), _x("pci_device", devfn.split(".")[0], 12),
                _x("pci_domain", dom[-4:], 12), _x("pci_bus_id", bus, 12), "        </pci>",
                _x("fan_speed", None if g.get("fan_speed_pct") is None else f"{g['fan_speed_pct']} %", 8),
                _x("performance_state", g.get("pstate", "P0"), 8),
                "        <fb_memory_usage>", _x("total", f"{g['memory_total_mib']} MiB", 12),
                _x("reserved", f"{g.get('memory_reserved_mib', 0)} MiB", 12), _x("used", f"{st['used']} MiB", 12),
                _x("free", f"{st['free']} MiB", 12), "        </fb_memory_usage>",
                _x("compute_mode", "Default", 8),
                "        <utilization>", _x("gpu_util", None if _util(g) is None else f"{_util(g)} %", 12),
                _x("memory_util", None if _mig_on(g) else f"{g.get('utilization_memory_pct', 0)} %", 12),
                "        </utilization>",
                "        <ecc_mode>"]
        ecc = {"on": "Enabled", "off": "Disabled"}.get(g.get("ecc"))
        out += [_x("current_ecc", ecc, 12), _x("pending_ecc", ecc, 12), "        </ecc_mode>",
                "        <temperature>", _x("gpu_temp", f"{int(g.get('temperature_c', 30))} C", 12),
                "        </temperature>",
                "        <gpu_power_readings>", _x("power_state", g.get("pstate", "P0"), 12),
                _x("power_draw", None if g.get("power_draw_w") is None else f"{float(g['power_draw_w']):.2f} W", 12),
                _x("current_power_limit", f"{float(g.get('power_limit_w') or 0):.2f} W", 12),
                "        </gpu_power_readings>",
                "        <processes>"]
        for r in st["procs"]:
            ms = r["mig"]
            out.append("            <process_info>")
            if ms is not None:
                out += [_x("gpu_instance_id", ms["dev"].get("gpu_instance_id", 0), 16),
                        _x("compute_instance_id", ms["dev"].get("compute_instance_id", 0), 16)]
            out += [_x("pid", r["pid"], 16), _x("type", r["type"], 16), _x("process_name", r["name"], 16),
                    _x("used_memory", f"{r['used']} MiB", 16), "            </process_info>"]
        out += ["        </processes>", "        <accounted_processes>", "        </accounted_processes>",
                "    </gpu>", ""]
    out.append("</nvidia_smi_log>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line


def _parse(argv: list[str]) -> dict | None:
    opts: dict = {"fmt": None}
    it = iter(argv)

    def val(a, flag):
        # `--flag=value` or `--flag value`
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
        return next(it, None)

    for a in it:
        if a in ("-q", "--query"):
            opts["q"] = True
        elif a in ("-x", "--xml-format"):
            opts["x"] = True
        elif a in ("-qx", "-xq"):
            opts["q"] = opts["x"] = True
        elif a in ("-L", "--list-gpus"):
            opts["L"] = True
        elif a == "--version":
            opts["version"] = True
        elif a in ("-h", "--help"):
            opts["help"] = True
        elif a == "-i" or a == "--id" or a.startswith("--id="):
            opts["id"] = val(a, "--id")
        elif a.startswith("-i") and len(a) > 2:
            opts["id"] = a[2:]
        elif a == "--query-gpu" or a.startswith("--query-gpu="):
            opts["query_gpu"] = val(a, "--query-gpu")
        elif a == "--query-compute-apps" or a.startswith("--query-compute-apps="):
            opts["query_apps"] = val(a, "--query-compute-apps")
        elif a == "--format" or a.startswith("--format="):
            opts["fmt"] = val(a, "--format")
        else:
            return None
        if any(v is None for k, v in opts.items() if k != "fmt"):
            return None
    return opts


def _select(gpus: list[dict], ident: str | None) -> list[dict] | None:
    if ident is None:
        return gpus
    chosen = []
    for part in ident.split(","):
        part = part.strip()
        hit = [st for st in gpus if part in (str(st["gpu"]["index"]), st["gpu"]["uuid"], st["gpu"]["pci_bus_id"])]
        if not hit:
            return None
        chosen += [st for st in hit if st not in chosen]
    return chosen


def render(argv: list[str], profile: dict, procs: list[dict], now: datetime.datetime) -> tuple[str, str, int]:
    """What `nvidia-smi *argv` prints for this profile and these live processes: (stdout, stderr, rc)."""
    failure = profile.get("failure")
    if failure == "no_driver":
        # The real binary says this for every invocation, even --version or a bad flag.
        return NO_DRIVER, "", RC_NO_DRIVER
    if failure == "mismatch":
        lib = profile.get("nvml_library_version") or ".".join(str(profile.get("driver_version") or "").split(".")[:2])
        return MISMATCH.format(lib), "", RC_MISMATCH
    opts = _parse(list(argv))
    if opts is None:
        return BAD_ARGS, "", RC_BAD_ARGS
    if opts.get("help"):
        return "NVIDIA System Management Interface -- v{}\n".format(profile.get("driver_version")), "", RC_OK
    if opts.get("version"):
        return _version(profile), "", RC_OK
    gpus = _gpu_state(profile, procs) if failure != "no_devices" else []
    if not gpus:
        return NO_DEVICES, "", RC_NOT_FOUND
    gpus = _select(gpus, opts.get("id"))
    if gpus is None:
        return NO_DEVICES, "", RC_NOT_FOUND
    if "query_gpu" in opts or "query_apps" in opts:
        if not opts.get("fmt"):
            return BAD_ARGS, "", RC_BAD_ARGS
        fmt = {f.strip() for f in opts["fmt"].split(",")}
        if "csv" not in fmt or not fmt <= {"csv", "noheader", "nounits"}:
            return BAD_ARGS, "", RC_BAD_ARGS
        if "query_gpu" in opts:
            out, rc = _query_gpu(opts["query_gpu"], fmt, profile, gpus, now)
        else:
            out, rc = _query_apps(opts["query_apps"], fmt, gpus, now)
        return out, "", rc
    if opts.get("L"):
        return _list(gpus), "", RC_OK
    if opts.get("q"):
        return (_query_xml if opts.get("x") else _query_text)(profile, gpus, now), "", RC_OK
    if opts.get("x"):
        return BAD_ARGS, "", RC_BAD_ARGS
    return _render_table(profile, gpus, now), "", RC_OK


# ---------------------------------------------------------------------------------------------
# I/O edge


def _alive(pid: int) -> bool:
    return pid > 0 and os.path.exists(f"/proc/{pid}")


def read_procs(state_dir: str) -> list[dict]:
    """Live processes from the engine doubles' state files; half-written or foreign files are skipped."""
    procs = []
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return procs
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(state_dir, name), encoding="utf-8") as fh:
                doc = json.load(fh)
            pid = int(doc["pid"])
            gpus = [{"uuid": str(u["uuid"]), "used_mib": int(u["used_mib"])} for u in doc.get("gpus") or []]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid):
            procs.append({"pid": pid, "process_name": str(doc.get("process_name") or "python"), "gpus": gpus})
    return procs


def main() -> int:
    path = os.environ.get("PI_LAB_GPU_PROFILE", DEFAULT_PROFILE)
    try:
        with open(path, encoding="utf-8") as fh:
            profile = json.load(fh)
    except (OSError, ValueError):
        # No profile: behave as a machine whose driver is not loaded.
        profile = {"failure": "no_driver"}
    procs = read_procs(os.environ.get("PI_LAB_GPU_STATE", DEFAULT_STATE))
    out, err, rc = render(sys.argv[1:], profile, procs, datetime.datetime.now())
    sys.stdout.write(out)
    sys.stdout.flush()
    if err:
        sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
