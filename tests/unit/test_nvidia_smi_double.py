"""The nvidia-smi double against real captures (tests/fixtures/nvidia-smi/SOURCES.md)."""

from __future__ import annotations

import copy
import datetime
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pi_ansible.lab.doubles import nvidia_smi as smi
from pi_ansible.lab.gpu_profiles import DEFAULT_ORDER, PROFILES
from pi_ansible.planning import gpu_facts_parse as parse

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-smi"
SCRIPT = Path(smi.__file__)
MASKED = "GPU-00000000-0000-0000-0000-000000000000"


def fixture(name: str) -> str:
    return (FIX / name).read_bytes().decode()


def gpu(**kw) -> dict:
    base = {"index": 0, "uuid": MASKED, "mig": False, "mig_devices": [], "pstate": "P0", "fan_speed_pct": None,
            "persistence_mode": True, "ecc": "on", "mig_capable": True, "serial": "0000000000000",
            "utilization_gpu_pct": 0, "utilization_memory_pct": 0}
    base.update(kw)
    return base


def h100(**kw) -> dict:
    fields = dict(name="NVIDIA H100 80GB HBM3", pci_bus_id="00000000:00:09.0", memory_total_mib=81559,
                  memory_reserved_mib=479, compute_cap="9.0", power_limit_w=700, power_draw_w=69.85,
                  temperature_c=41, memory_free_adjust_mib=1)
    fields.update(kw)
    return gpu(**fields)


def prof(driver: str, cuda: str, gpus: list[dict]) -> dict:
    return {"name": "capture", "driver_version": driver, "cuda_version": cuda, "failure": None, "gpus": gpus}


def proc(pid: int, name: str, uuid: str, mib: int, type_: str = "C") -> dict:
    return {"pid": pid, "process_name": name, "type": type_, "gpus": [{"uuid": uuid, "used_mib": mib}]}


def mig_h100(dev0_base: int, gpu_base: int, **kw) -> dict:
    specs = [("3g.40gb", 2, 40448, 60, 3, 24739, dev0_base), ("2g.20gb", 3, 20096, 32, 2, 12369, 17),
             ("1g.10gb", 9, 9984, 16, 1, 6184, 9), ("1g.10gb", 10, 9984, 16, 1, 6184, 9)]
    devs = [{"index": i, "profile": p, "uuid": f"MIG-{i:08d}-0000-0000-0000-{i:012d}", "gpu_instance_id": gi,
             "compute_instance_id": 0, "memory_total_mib": mem, "sm": sm, "ce": ce, "enc": 0, "dec": ce,
             "ofa": 0, "jpg": ce, "bar1_total_mib": bar1, "memory_used_base_mib": base}
            for i, (p, gi, mem, sm, ce, bar1, base) in enumerate(specs)]
    return h100(mig=True, mig_devices=devs, memory_used_base_mib=gpu_base, utilization_gpu_pct=None,
                utilization_memory_pct=None, **kw)


def run(argv, profile, procs=(), now=datetime.datetime(2026, 7, 14, 8, 12, 38)):
    return smi.render(list(argv), profile, list(procs), now)


def norm(text: str) -> list[str]:
    """Markdown sources lose trailing spaces: compare line by line without them."""
    lines = [ln.rstrip() for ln in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


# --------------------------------------------------------------------------- plain table, byte for byte

def test_table_h100_590_idle_is_the_capture():
    out, err, rc = run([], prof("590.48.01", "13.1", [h100()]))
    assert (out, err, rc) == (fixture("h100-590.48.01.table-idle.txt"), "", 0)


def test_table_h100_590_load_is_the_capture():
    g = h100(power_draw_w=629.3, temperature_c=59, utilization_gpu_pct=100, memory_used_base_mib=20)
    procs = [proc(11327, "/root/tools/memhog", MASKED, 2566), proc(11328, "/root/tools/memhog", MASKED, 1542),
             proc(11345, "./gpu_burn", MASKED, 15690)]
    out, _, rc = run([], prof("590.48.01", "13.1", [g]), procs, datetime.datetime(2026, 7, 14, 8, 12, 53))
    assert rc == 0
    assert out == fixture("h100-590.48.01.table-load.txt")


def test_table_h100_mig_590_idle_is_the_capture():
    g = mig_h100(26, 59, power_draw_w=98.1, temperature_c=42)
    out, _, _ = run([], prof("590.48.01", "13.1", [g]), now=datetime.datetime(2026, 7, 14, 9, 0, 26))
    assert out == fixture("h100-mig-590.48.01.table-idle.txt")


def test_table_h100_mig_590_load_is_the_capture_with_gi_ci_columns():
    g = mig_h100(39, 73, power_draw_w=432.7, temperature_c=52)
    mig0 = g["mig_devices"][0]["uuid"]
    procs = [proc(21180, "/root/tools/memhog", mig0, 2296), proc(21181, "/root/tools/memhog", mig0, 1272),
             proc(21198, "./gpu_burn", mig0, 7484)]
    out, _, _ = run([], prof("590.48.01", "13.1", [g]), procs, datetime.datetime(2026, 7, 14, 9, 0, 43))
    assert out == fixture("h100-mig-590.48.01.table-load.txt")


def test_table_h200_590_idle_is_the_capture():
    g = gpu(name="NVIDIA H200", pci_bus_id="00000000:83:00.0", memory_total_mib=143771, memory_reserved_mib=614,
            compute_cap="9.0", power_limit_w=700, power_draw_w=77.4, temperature_c=28)
    expected = fixture("h200-590.48.01.table-idle.txt")
    out, _, _ = run([], prof("590.48.01", "13.1", [g]), now=_now_of(expected))
    assert out == expected


def test_table_l40s_595_load_is_the_capture():
    g = gpu(name="NVIDIA L40S", pci_bus_id="00000000:01:00.0", memory_total_mib=46068, memory_reserved_mib=609,
            compute_cap="8.9", power_limit_w=350, power_draw_w=110.2, temperature_c=54, persistence_mode=False,
            mig_capable=False, utilization_gpu_pct=9, memory_used_base_mib=16)
    procs = [proc(20037, "ffmpeg", MASKED, 538), proc(20038, "ffmpeg", MASKED, 681)]
    expected = fixture("l40s-595.80.table-load.txt")
    out, _, _ = run([], prof("595.80", "13.2", [g]), procs, _now_of(expected))
    assert out == expected


def test_table_550_colab_a100_is_the_capture():
    g = gpu(name="NVIDIA A100-SXM4-40GB", pci_bus_id="00000000:00:04.0", memory_total_mib=40960,
            compute_cap="8.0", power_limit_w=400, power_draw_w=45.0, temperature_c=32, persistence_mode=False)
    out, _, _ = run([], prof("550.54.15", "12.4", [g]), now=datetime.datetime(2025, 2, 12, 19, 5, 12))
    assert out == fixture("a100-550.54.15.table.txt")


def test_table_550_h200_is_the_capture():
    g = gpu(name="NVIDIA H200", pci_bus_id="00000000:03:00.0", memory_total_mib=143771, compute_cap="9.0",
            power_limit_w=700, power_draw_w=74.0, temperature_c=28, memory_used_base_mib=1)
    out, _, _ = run([], prof("550.90.12", "12.4", [g]))
    assert out.split("\n", 1)[1] == fixture("h200-550.90.12.table-nodate.txt")


def test_table_550_eight_v100_is_the_capture():
    temps = [37, 40, 39, 36, 37, 39, 38, 36]
    watts = [45, 40, 39, 39, 44, 41, 45, 44]
    gpus = [gpu(index=i, uuid=f"GPU-{i}", name="Tesla V100-SXM2-16GB", pci_bus_id=f"00000000:00:{4 + i:02X}.0",
                memory_total_mib=16384, compute_cap="7.0", power_limit_w=300, power_draw_w=watts[i],
                temperature_c=temps[i], mig_capable=False, memory_used_base_mib=1) for i in range(8)]
    out, _, _ = run([], prof("550.127.05", "12.4", gpus))
    assert out.split("\n", 1)[1] == fixture("v100x8-550.127.05.table-nodate.txt")


def test_table_535_narrow_layout_is_the_capture():
    g = gpu(name="NVIDIA GeForce GTX 1050 Ti", pci_bus_id="00000000:08:00.0", memory_total_mib=4096,
            compute_cap="6.1", power_limit_w=75, power_draw_w=None, temperature_c=31, persistence_mode=False,
            ecc=None, mig_capable=False, fan_speed_pct=40)
    out, _, _ = run([], prof("535.161.07", "12.2", [g]))
    assert out.split("\n", 1)[1] == fixture("gtx1050ti-535.161.07.table-nodate.txt")


def test_table_570_wide_pid_layout_is_the_capture():
    g = gpu(name="NVIDIA GeForce RTX 5090", pci_bus_id="00000000:02:00.0", memory_total_mib=32607,
            compute_cap="12.0", power_limit_w=575, power_draw_w=24.3, temperature_c=25, ecc=None,
            mig_capable=False, fan_speed_pct=0, pstate="P8", memory_used_base_mib=2)
    out, _, _ = run([], prof("570.124.06", "12.8", [g]))
    assert out.split("\n", 1)[1] == fixture("rtx5090-570.124.06.table-nodate.txt")


def rtx4090(**kw) -> dict:
    return gpu(name="NVIDIA GeForce RTX 4090", pci_bus_id="00000000:01:00.0", memory_total_mib=24564,
               compute_cap="8.9", power_limit_w=450, ecc="off", mig_capable=False, fan_speed_pct=0, pstate="P8",
               **kw)


def test_table_550_rtx4090_with_processes_matches_markdown_capture():
    g = rtx4090(persistence_mode=False, power_draw_w=14.0, temperature_c=44, memory_used_base_mib=12)
    procs = [proc(9067, "/usr/lib/xorg/Xorg", MASKED, 9, "G"), proc(9119, "/usr/bin/gnome-shell", MASKED, 10, "G")]
    out, _, _ = run([], prof("550.120", "12.4", [g]), procs, datetime.datetime(2025, 3, 13, 10, 54, 40))
    assert norm(out) == norm(fixture("rtx4090-550.120.table.md.txt"))


def test_table_580_rtx4090_with_processes_matches_capture():
    g = rtx4090(persistence_mode=True, power_draw_w=36.0, temperature_c=44, memory_used_base_mib=53)
    procs = [proc(3230642, "/usr/lib/xorg/Xorg", MASKED, 167, "G"),
             proc(3230734, "/usr/bin/gnome-shell", MASKED, 12, "G")]
    out, _, _ = run([], prof("580.65.06", "13.0", [g]), procs, datetime.datetime(2025, 10, 28, 15, 51, 54))
    assert out == fixture("rtx4090-580.65.06.table.md.txt")


def test_table_535_rtxa2000_with_processes_matches_markdown_capture():
    g = gpu(name="NVIDIA RTX A2000 12GB", pci_bus_id="00000000:01:00.0", memory_total_mib=12282,
            compute_cap="8.6", power_limit_w=70, power_draw_w=9.0, temperature_c=37, persistence_mode=False,
            display_active=True, ecc="off", mig_capable=False, fan_speed_pct=30, pstate="P8",
            utilization_gpu_pct=12, memory_used_base_mib=368)
    procs = [proc(484602, "/usr/lib/xorg/Xorg", MASKED, 219, "G"),
             proc(484772, "/usr/bin/gnome-shell", MASKED, 91, "G")]
    out, _, _ = run([], prof("535.113.01", "12.2", [g]), procs, datetime.datetime(2023, 10, 29, 15, 9, 27))
    assert norm(out) == norm(fixture("rtxa2000-535.113.01.table.md.txt"))


def _now_of(table: str) -> datetime.datetime:
    return datetime.datetime.strptime(" ".join(table.split("\n", 1)[0].split()), "%a %b %d %H:%M:%S %Y")


# --------------------------------------------------------------------------- queries against the captures

COMMON_FIELDS = ["timestamp", "driver_version", "count", "name", "serial", "uuid", "pci.bus_id", "index",
                 "display_active", "persistence_mode", "fan.speed", "pstate", "memory.total", "memory.reserved",
                 "memory.used", "memory.free", "compute_mode", "compute_cap", "utilization.gpu",
                 "utilization.memory", "ecc.mode.current", "temperature.gpu", "power.draw", "power.limit",
                 "enforced.power.limit", "mig.mode.current", "mig.mode.pending"]


def project(capture_csv: str, fields: list[str]) -> str:
    """The capture's full `--query-gpu` CSV cut down to `fields` (what the real tool prints for them)."""
    lines = capture_csv.rstrip("\n").split("\n")
    header = lines[0].split(", ")
    names = [h.split(" [")[0] for h in header]
    cols = [names.index(f) for f in fields]
    return "".join(", ".join(line.split(", ")[c] for c in cols) + "\n" for line in lines)


def strip_units(csv: str) -> str:
    lines = csv.rstrip("\n").split("\n")
    header = lines[0].split(", ")
    out = []
    for line in lines[1:]:
        cells = line.split(", ")
        for i, h in enumerate(header):
            if h.endswith("]") and cells[i] != "[N/A]":
                cells[i] = cells[i].rsplit(" ", 1)[0]
        out.append(", ".join(cells))
    return "".join(x + "\n" for x in out)


CAPTURE_GPUS = {
    "h100-590.48.01.query-gpu-idle.csv": (
        h100(power_draw_w=69.85), datetime.datetime(2026, 7, 14, 8, 12, 38, 696000)),
    "h100-mig-590.48.01.query-gpu-idle.csv": (
        mig_h100(26, 59, power_draw_w=71.15, temperature_c=42), datetime.datetime(2026, 7, 14, 9, 0, 27, 792000)),
}


@pytest.mark.parametrize("name", sorted(CAPTURE_GPUS))
@pytest.mark.parametrize("fmt", ["csv", "csv,noheader", "csv,nounits", "csv,noheader,nounits"])
def test_query_gpu_matches_the_capture_projected(name, fmt):
    g, now = CAPTURE_GPUS[name]
    out, err, rc = run([f"--query-gpu={','.join(COMMON_FIELDS)}", f"--format={fmt}"],
                       prof("590.48.01", "13.1", [g]), now=now)
    expected = project(fixture(name), COMMON_FIELDS)
    if "nounits" in fmt:
        expected = expected.split("\n", 1)[0] + "\n" + strip_units(expected)
    if "noheader" in fmt:
        expected = expected.split("\n", 1)[1]
    assert (out, err, rc) == (expected, "", 0)


def test_query_gpu_aliases_print_their_own_names():
    out, _, _ = run(["--query-gpu=gpu_name,gpu_uuid,memory.total", "--format=csv"], prof("590.48.01", "13.1", [h100()]))
    assert out.split("\n")[0] == "gpu_name, gpu_uuid, memory.total [MiB]"


def test_unknown_field_is_the_real_error():
    out, _, rc = run(["--query-gpu=index,cuda_version", "--format=csv"], prof("590.48.01", "13.1", [h100()]))
    assert out == 'Field "cuda_version" is not a valid field to query.\n'
    assert rc == 2


LOAD_PROCS = [proc(11327, "/root/tools/memhog", MASKED, 2566), proc(11328, "/root/tools/memhog", MASKED, 1542),
              proc(11345, "./gpu_burn", MASKED, 15690)]
APP_FIELDS = "timestamp,gpu_name,gpu_bus_id,gpu_serial,gpu_uuid,pid,process_name,used_gpu_memory"


def test_compute_apps_with_rows_is_the_capture():
    out, _, rc = run([f"--query-compute-apps={APP_FIELDS}", "--format=csv"], prof("590.48.01", "13.1", [h100()]),
                     LOAD_PROCS, datetime.datetime(2026, 7, 14, 8, 12, 53, 500000))
    assert (out, rc) == (fixture("h100-590.48.01.compute-apps-load.csv"), 0)


def test_compute_apps_without_processes_is_the_header_only():
    out, _, _ = run([f"--query-compute-apps={APP_FIELDS}", "--format=csv"], prof("590.48.01", "13.1", [h100()]))
    assert out == fixture("h100-590.48.01.compute-apps-idle.csv")
    out, _, rc = run([f"--query-compute-apps={APP_FIELDS}", "--format=csv,noheader"],
                     prof("590.48.01", "13.1", [h100()]))
    assert (out, rc) == ("", 0)


def test_compute_apps_under_mig_name_the_parent_gpu():
    g = mig_h100(39, 73)
    mig0 = g["mig_devices"][0]["uuid"]
    procs = [proc(21180, "/root/tools/memhog", mig0, 2296), proc(21181, "/root/tools/memhog", mig0, 1272),
             proc(21198, "./gpu_burn", mig0, 7484)]
    out, _, _ = run([f"--query-compute-apps={APP_FIELDS}", "--format=csv"], prof("590.48.01", "13.1", [g]), procs,
                    datetime.datetime(2026, 7, 14, 9, 0, 44, 742000))
    assert out == fixture("h100-mig-590.48.01.compute-apps-load.csv")


def test_used_memory_alias_prints_used_gpu_memory():
    out, _, _ = run(["--query-compute-apps=pid,process_name,used_memory", "--format=csv,nounits"],
                    prof("590.48.01", "13.1", [h100()]), [proc(3858903, "VLLM::EngineCore", MASKED, 6265)])
    assert out == "pid, process_name, used_gpu_memory [MiB]\n3858903, VLLM::EngineCore, 6265\n"


def test_graphics_only_clients_are_not_compute_apps():
    out, _, _ = run(["--query-compute-apps=pid", "--format=csv,noheader"], prof("590.48.01", "13.1", [h100()]),
                    [proc(1, "Xorg", MASKED, 9, "G"), proc(2, "kwin", MASKED, 25, "C+G")])
    assert out == "2\n"


def test_list_and_version_are_the_captures():
    assert run(["-L"], prof("590.48.01", "13.1", [h100()]))[0] == fixture("h100-590.48.01.list.txt")
    assert run(["--list-gpus"], prof("590.48.01", "13.1", [mig_h100(26, 59)]))[0] == fixture(
        "h100-mig-590.48.01.list.txt")
    assert run(["--version"], prof("590.48.01", "13.1", [h100()]))[0] == fixture("h100-590.48.01.version.txt")


# --------------------------------------------------------------------------- failures

def test_no_driver_is_the_real_145_bytes_for_every_invocation():
    p = {"name": "x", "driver_version": None, "cuda_version": None, "failure": "no_driver", "gpus": []}
    for argv in ([], ["--query-gpu=index", "--format=csv"], ["-q", "-x"], ["-L"], ["--version"], ["--bogus"]):
        out, err, rc = run(argv, p)
        assert (out, err, rc) == (fixture("no-driver-535.261.03.txt"), "", 9)
    assert len(fixture("no-driver-535.261.03.txt").encode()) == 145


def test_mismatch_and_no_devices_are_the_real_texts():
    p = dict(PROFILES["mismatch"], nvml_library_version="550.144")
    assert run([], p) == (fixture("mismatch-550.144.txt"), "", 18)
    assert run(["--query-gpu=index", "--format=csv"], PROFILES["nodevices"]) == (fixture("no-devices.txt"), "", 6)
    assert run([], PROFILES["nodevices"]) == (fixture("no-devices.txt"), "", 6)


def test_bad_id_and_bad_arguments():
    p = PROFILES["h100x2"]
    assert run(["-i", "7"], p)[2] == 6
    assert run(["--bogus"], p)[2] == 2
    assert run(["--query-gpu=index"], p)[2] == 2  # no --format
    out, _, rc = run(["--id=1", "--query-gpu=index", "--format=csv,noheader"], p)
    assert (out, rc) == ("1\n", 0)
    out, _, _ = run(["-i", p["gpus"][1]["uuid"], "--query-gpu=index", "--format=csv,noheader"], p)
    assert out == "1\n"


# --------------------------------------------------------------------------- -q -x

def _paths(elem, prefix=""):
    here = f"{prefix}/{elem.tag}"
    yield here
    for child in elem:
        yield from _paths(child, here)


@pytest.mark.parametrize("name", ["h100x2", "rtx4090", "h100-mig"])
def test_xml_uses_the_real_element_paths(name):
    out, _, rc = run(["-q", "-x"], PROFILES[name])
    assert rc == 0 and out.startswith('<?xml version="1.0" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">\n')
    ours = set(_paths(ET.fromstring(out.split("\n", 2)[2])))
    theirs = set()
    for real in ("rtx4090-535.86.05.qx.xml", "a100-mig-510.47.03.qx.xml"):
        theirs |= set(_paths(ET.parse(FIX / real).getroot()))
    # process_info children are not in these fixtures (they have no processes); the 555 L4 one uses the same names
    missing = {p for p in ours - theirs if "/process_info" not in p}
    assert not missing


def test_xml_values():
    p = PROFILES["h100-mig"]
    mig0 = p["gpus"][0]["mig_devices"][0]["uuid"]
    out, _, _ = run(["-x", "-q"], p, [proc(77, "VLLM::EngineCore", mig0, 1000)])
    root = ET.fromstring(out.split("\n", 2)[2])
    assert root.findtext("driver_version") == "590.48.01" and root.findtext("cuda_version") == "13.1"
    g = root.find("gpu")
    assert g.get("id") == p["gpus"][0]["pci_bus_id"]
    assert g.findtext("mig_mode/current_mig") == "Enabled"
    assert len(g.findall("mig_devices/mig_device")) == 4
    assert g.findtext("fb_memory_usage/total") == "81559 MiB"
    assert g.findtext("processes/process_info/used_memory") == "1000 MiB"
    assert g.findtext("processes/process_info/gpu_instance_id") == "2"


# --------------------------------------------------------------------------- profiles and round trips

def test_profiles_follow_the_contract():
    assert set(DEFAULT_ORDER) <= set(PROFILES)
    uuids = set()
    for key, p in PROFILES.items():
        assert p["name"] == key
        assert p["failure"] in (None, "no_devices", "mismatch", "no_driver")
        for g in p["gpus"]:
            assert len(g["uuid"]) == 40 and g["uuid"].startswith("GPU-")
            assert g["uuid"] == g["uuid"].lower().replace("gpu-", "GPU-")
            uuids.add(g["uuid"])
            for k in ("index", "name", "pci_bus_id", "memory_total_mib", "memory_reserved_mib", "compute_cap",
                      "power_limit_w", "mig", "mig_devices"):
                assert k in g
    assert len(uuids) == sum(len(p["gpus"]) for p in PROFILES.values())
    assert PROFILES["rtx4090"]["cuda_version"] == "12.4" and PROFILES["rtx4090"]["driver_version"].startswith("550.")
    assert (PROFILES["h100x2"]["driver_version"], PROFILES["h100x2"]["cuda_version"]) == ("590.48.01", "13.1")
    assert len(PROFILES["h200x8"]["gpus"]) == 8 and PROFILES["h200x8"]["cuda_version"] == "13.0"
    json.dumps(PROFILES)  # written to pods as JSON


def _facts(profile, procs=()):
    q = run([f"--query-gpu={','.join(parse.QUERY_GPU_FIELDS)}", "--format=csv,noheader,nounits"], profile, procs)
    table = run([], profile, procs)
    apps = run([f"--query-compute-apps={','.join(parse.QUERY_APPS_FIELDS)}", "--format=csv,noheader,nounits"],
               profile, procs)
    return parse.build_facts(q[0], q[2], table[0], apps[0])


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_parser_reads_back_every_profile(name):
    p = PROFILES[name]
    procs = []
    if p["gpus"] and not p["failure"]:
        procs = [proc(4242, "VLLM::EngineCore", p["gpus"][-1]["uuid"], 1234)]
    facts = _facts(p, procs)
    if p["failure"]:
        assert facts["failure"]["kind"] == p["failure"]
        assert facts["gpus"] == []
        return
    assert facts["failure"] is None
    assert (facts["driver_version"], facts["cuda_version"]) == (p["driver_version"], p["cuda_version"])
    assert [g["uuid"] for g in facts["gpus"]] == [g["uuid"] for g in p["gpus"]]
    for got, want in zip(facts["gpus"], p["gpus"], strict=True):
        assert got["name"] == want["name"] and got["index"] == want["index"]
        assert got["memory_total_mib"] == want["memory_total_mib"]
        assert got["memory_reserved_mib"] == want["memory_reserved_mib"]
        assert got["mig_enabled"] is (True if want["mig"] else (False if want.get("mig_capable") else None))
        used = int(want.get("memory_used_base_mib") or 0) + (1234 if want is p["gpus"][-1] else 0)
        assert got["memory_used_mib"] == used
        assert got["memory_free_mib"] == want["memory_total_mib"] - want["memory_reserved_mib"] - used
    assert facts["mig_enabled"] is any(g["mig"] for g in p["gpus"])
    assert [(x["pid"], x["process_name"], x["used_memory_mib"], x["gpu_index"]) for x in facts["processes"]] == [
        (4242, "VLLM::EngineCore", 1234, p["gpus"][-1]["index"])]


# --------------------------------------------------------------------------- the script, state files, processes

def _env(tmp_path, profile):
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    state = tmp_path / "gpu"
    state.mkdir(exist_ok=True)
    env = dict(os.environ, PI_LAB_GPU_PROFILE=str(tmp_path / "profile.json"), PI_LAB_GPU_STATE=str(state))
    return env, state


def _smi(env, *argv):
    r = subprocess.run([sys.executable, str(SCRIPT), *argv], env=env, capture_output=True, text=True, timeout=30)
    return r.stdout, r.stderr, r.returncode


def test_script_is_standalone_stdlib_python():
    src = SCRIPT.read_text()
    assert src.startswith("#!/usr/bin/python3\n")
    imported = {ln.split()[1].split(".")[0] for ln in src.splitlines() if ln.startswith(("import ", "from "))}
    assert imported <= {"__future__", "datetime", "json", "os", "sys"}


def test_processes_appear_and_disappear_with_state_files(tmp_path):
    p = copy.deepcopy(PROFILES["h100x2"])
    env, state = _env(tmp_path, p)
    apps = ["--query-compute-apps=pid,process_name,gpu_uuid,used_memory", "--format=csv,noheader,nounits"]
    assert _smi(env, *apps) == ("", "", 0)
    uuid = p["gpus"][1]["uuid"]
    me = os.getpid()
    (state / f"{me}.json").write_text(json.dumps(
        {"pid": me, "process_name": "VLLM::EngineCore", "gpus": [{"uuid": uuid, "used_mib": 75034}]}))
    dead = subprocess.Popen(["true"])
    dead.wait()
    (state / f"{dead.pid}.json").write_text(json.dumps(
        {"pid": dead.pid, "process_name": "gone", "gpus": [{"uuid": uuid, "used_mib": 1}]}))
    (state / "half.json").write_text('{"pid": 1, "process_name": "VLLM::Eng')
    (state / "garbage.json").write_text("\x00\xff not json")
    (state / "wrong.json").write_text(json.dumps({"pid": "abc"}))
    assert _smi(env, *apps) == (f"{me}, VLLM::EngineCore, {uuid}, 75034\n", "", 0)
    table, _, _ = _smi(env)
    assert "VLLM::EngineCore" in table and "75034MiB" in table and "No running processes found" not in table
    out, _, _ = _smi(env, "--query-gpu=index,memory.used,memory.free", "--format=csv,noheader,nounits")
    assert out == f"0, 0, {81559 - 479}\n1, 75034, {81559 - 479 - 75034}\n"
    (state / f"{me}.json").unlink()
    assert _smi(env, *apps) == ("", "", 0)
    assert "No running processes found" in _smi(env)[0]


def test_script_failures_go_to_stdout(tmp_path):
    env, _ = _env(tmp_path, PROFILES["mismatch"])
    out, err, rc = _smi(env)
    assert (out.splitlines()[0], err, rc) == ("Failed to initialize NVML: Driver/library version mismatch", "", 18)
    env["PI_LAB_GPU_PROFILE"] = str(tmp_path / "absent.json")
    assert _smi(env, "-L") == (fixture("no-driver-535.261.03.txt"), "", 9)
