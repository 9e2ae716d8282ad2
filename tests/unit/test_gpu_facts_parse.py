"""The GPU facts parser on real nvidia-smi outputs (tests/fixtures/nvidia-smi/SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_ansible.planning.gpu_facts_parse import (
    QUERY_GPU_FIELDS,
    build_facts,
    classify_failure,
    parse_compute_apps,
    parse_header_versions,
    parse_query_gpu,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-smi"
MASKED = "GPU-00000000-0000-0000-0000-000000000000"


def fixture(name: str) -> str:
    return (FIX / name).read_bytes().decode()


def noheader_nounits(csv: str) -> str:
    """The same query with `--format=csv,noheader,nounits` (units drop, `[N/A]` stays)."""
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


# --------------------------------------------------------------------------- --query-gpu

EXPECTED_GPUS = {
    "h100-590.48.01.query-gpu-idle.csv": dict(
        index=0, uuid=MASKED, name="NVIDIA H100 80GB HBM3", pci_bus_id="00000000:00:09.0", memory_total_mib=81559,
        memory_reserved_mib=479, memory_used_mib=0, memory_free_mib=81081, utilization_gpu_pct=0,
        driver_version="590.48.01", compute_cap="9.0", mig_mode="Disabled", mig_enabled=False,
        temperature_c=41, power_draw_w=69.85, serial="0000000000000"),
    "h100-590.48.01.query-gpu-load.csv": dict(
        memory_used_mib=19818, memory_free_mib=61263, utilization_gpu_pct=100, mig_enabled=False),
    "h100-mig-590.48.01.query-gpu-idle.csv": dict(
        memory_used_mib=59, memory_free_mib=81022, utilization_gpu_pct=None, mig_mode="Enabled", mig_enabled=True),
    "h200-590.48.01.query-gpu-idle.csv": dict(
        name="NVIDIA H200", memory_total_mib=143771, memory_reserved_mib=614, memory_used_mib=0,
        memory_free_mib=143158, compute_cap="9.0", mig_enabled=False),
    "rtx4080s-595.71.05.query-gpu-idle.csv": dict(
        name="NVIDIA GeForce RTX 4080 SUPER", memory_total_mib=16376, memory_reserved_mib=434, memory_used_mib=596,
        memory_free_mib=15348, driver_version="595.71.05", compute_cap="8.9", mig_mode=None, mig_enabled=None,
        serial=None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_GPUS))
def test_query_gpu_capture_with_header_and_units(name):
    gpus = parse_query_gpu(fixture(name))
    assert len(gpus) == 1
    for key, value in EXPECTED_GPUS[name].items():
        assert gpus[0][key] == value, key


@pytest.mark.parametrize("name", sorted(EXPECTED_GPUS))
def test_query_gpu_capture_without_header_or_units(name):
    text = fixture(name)
    fields = [h.split(" [")[0] for h in text.split("\n", 1)[0].split(", ")]
    bare, full = parse_query_gpu(noheader_nounits(text), fields), parse_query_gpu(text)
    # fields the parser knows come out the same; others stay raw text (with or without units)
    keys = set(EXPECTED_GPUS["h100-590.48.01.query-gpu-idle.csv"]) | {"memory_reserved_mib", "utilization_memory_pct"}
    assert [{k: g[k] for k in keys} for g in bare] == [{k: g[k] for k in keys} for g in full]


def test_query_gpu_default_fields_and_padding():
    # Some builds right-align numbers (seen on a Windows driver); cells are stripped.
    text = ("0, GPU-e132d16d-fe10-de80-9b80-63b7f04fbdfd, NVIDIA H100 80GB HBM3, 00000000:18:00.0,  81559,   479,"
            "     0, 81080, [N/A], 580.126.09, 9.0, [Not Supported]\n"
            "1, GPU-b0354a1a-37c2-086d-f6fe-953b6fac5c3e, NVIDIA H100 80GB HBM3, 00000000:2A:00.0, 81559, 479,"
            " 37155, 43925, 100, 580.126.09, 9.0, Disabled\n")
    gpus = parse_query_gpu(text)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0]["memory_total_mib"] == 81559 and gpus[0]["memory_used_mib"] == 0
    assert gpus[0]["utilization_gpu_pct"] is None and gpus[0]["mig_mode"] is None
    assert gpus[1]["memory_free_mib"] == 43925 and gpus[1]["mig_enabled"] is False
    assert len(QUERY_GPU_FIELDS) == 12


def test_query_gpu_ignores_error_text_and_ragged_lines():
    assert parse_query_gpu('Field "cuda_version" is not a valid field to query.\n') == []
    assert parse_query_gpu(fixture("no-driver-535.261.03.txt")) == []
    assert parse_query_gpu("") == []
    assert parse_query_gpu("0, GPU-x\n") == []


# --------------------------------------------------------------------------- --query-compute-apps

def test_compute_apps_capture_with_rows():
    apps = parse_compute_apps(fixture("h100-590.48.01.compute-apps-load.csv"))
    assert [(a["pid"], a["process_name"], a["used_memory_mib"], a["gpu_uuid"]) for a in apps] == [
        (11327, "/root/tools/memhog", 2566, MASKED), (11328, "/root/tools/memhog", 1542, MASKED),
        (11345, "./gpu_burn", 15690, MASKED)]
    assert apps[0]["gpu_bus_id"] == "00000000:00:09.0" and apps[0]["timestamp"] == "2026/07/14 08:12:53.500"


def test_compute_apps_capture_without_rows_and_mig():
    assert parse_compute_apps(fixture("h100-590.48.01.compute-apps-idle.csv")) == []
    assert parse_compute_apps("") == []
    mig = parse_compute_apps(fixture("h100-mig-590.48.01.compute-apps-load.csv"))
    assert {a["gpu_uuid"] for a in mig} == {MASKED}  # the parent GPU, not the MIG instance
    assert sum(a["used_memory_mib"] for a in mig) == 2296 + 1272 + 7484


def test_compute_apps_noheader_nounits_default_fields():
    apps = parse_compute_apps("3858903, VLLM::EngineCore, GPU-8e137fa6-c3d9-6980-7733-0d8df296756e, 6265\n")
    assert apps == [{"pid": 3858903, "process_name": "VLLM::EngineCore",
                     "gpu_uuid": "GPU-8e137fa6-c3d9-6980-7733-0d8df296756e", "used_memory_mib": 6265}]
    assert parse_compute_apps("pid, process_name, used_gpu_memory [MiB]\n3858903, VLLM::EngineCore, 6265 MiB\n") == [
        {"pid": 3858903, "process_name": "VLLM::EngineCore", "used_memory_mib": 6265, "gpu_uuid": None}]


# --------------------------------------------------------------------------- versions

@pytest.mark.parametrize("name,driver,cuda", [
    ("h100-590.48.01.table-idle.txt", "590.48.01", "13.1"),
    ("h100-mig-590.48.01.table-load.txt", "590.48.01", "13.1"),
    ("h200-590.48.01.table-idle.txt", "590.48.01", "13.1"),
    ("l40s-595.80.table-load.txt", "595.80", "13.2"),
    ("rtx2080s-610.57.04.table-load.txt", "610.57.04", "13.3"),  # "KMD Version" / "CUDA UMD Version"
    ("rtx4090-580.65.06.table.md.txt", "580.65.06", "13.0"),
    ("rtx4090-580.159.03.table.md.txt", "580.159.03", "13.0"),
    ("rtx5090-570.124.06.table-nodate.txt", "570.124.06", "12.8"),
    ("a100-550.54.15.table.txt", "550.54.15", "12.4"),
    ("rtx4090-550.120.table.md.txt", "550.120", "12.4"),
    ("h200-550.90.12.table-nodate.txt", "550.90.12", "12.4"),
    ("v100x8-550.127.05.table-nodate.txt", "550.127.05", "12.4"),
    ("rtxa2000-535.113.01.table.md.txt", "535.113.01", "12.2"),
    ("gtx1050ti-535.161.07.table-nodate.txt", "535.161.07", "12.2"),
    ("h100-590.48.01.version.txt", "590.48.01", "13.1"),
    ("rtx4090-535.86.05.qx.xml", "535.86.05", "12.2"),
    ("a100-mig-510.47.03.qx.xml", "510.47.03", "11.6"),
])
def test_header_versions_from_real_outputs(name, driver, cuda):
    assert parse_header_versions(fixture(name)) == (driver, cuda)


def test_header_versions_when_absent():
    assert parse_header_versions(fixture("no-driver-535.261.03.txt")) == (None, None)
    assert parse_header_versions("Driver Version: 580.105.06\nCUDA Version: Not Found\n") == ("580.105.06", None)
    assert parse_header_versions(None) == (None, None)


# --------------------------------------------------------------------------- failures

@pytest.mark.parametrize("name,rc,kind", [
    ("no-driver-535.261.03.txt", 9, "no_driver"),
    ("no-libnvidia-ml-535.261.03.txt", 12, "lib_missing"),
    ("mismatch-550.144.txt", 18, "mismatch"),
    ("no-devices.txt", 6, "no_devices"),
])
def test_classify_real_failures(name, rc, kind):
    got, message = classify_failure(fixture(name), rc)
    assert got == kind
    assert message and len(message) > 40
    # the text alone is enough (exit codes are partly unverified) ...
    assert classify_failure(fixture(name), 1)[0] == kind
    # ... and so is the exit code alone
    assert classify_failure("", rc)[0] == kind


def test_classify_names_the_fix():
    assert "550.144" in classify_failure(fixture("mismatch-550.144.txt"), 18)[1]
    assert "Reboot" in classify_failure(fixture("mismatch-550.144.txt"), 18)[1]
    assert "lsmod" in classify_failure(fixture("no-driver-535.261.03.txt"), 9)[1]
    assert classify_failure("bash: nvidia-smi: command not found\n", 127)[0] == "not_installed"
    assert classify_failure("Failed to initialize NVML: No supported GPUs were found\n", 255)[0] == "no_devices"
    kind, msg = classify_failure("Unable to determine the device handle for GPU0000:01:00.0: GPU is lost.\n", 15)
    assert kind == "unknown" and "exit 15" in msg and "GPU is lost" in msg
    assert classify_failure(fixture("h100-590.48.01.query-gpu-idle.csv"), 0) == (None, None)


# --------------------------------------------------------------------------- build_facts

def test_build_facts_from_a_real_h100_under_load():
    facts = build_facts(fixture("h100-590.48.01.query-gpu-load.csv"), 0, fixture("h100-590.48.01.table-load.txt"),
                        fixture("h100-590.48.01.compute-apps-load.csv"))
    assert facts["failure"] is None
    assert (facts["driver_version"], facts["cuda_version"]) == ("590.48.01", "13.1")
    assert facts["mig_enabled"] is False
    assert [g["memory_used_mib"] for g in facts["gpus"]] == [19818]
    assert [(p["pid"], p["gpu_index"]) for p in facts["processes"]] == [(11327, 0), (11328, 0), (11345, 0)]


def test_build_facts_mig_and_failures():
    facts = build_facts(fixture("h100-mig-590.48.01.query-gpu-idle.csv"), 0,
                        fixture("h100-mig-590.48.01.table-idle.txt"), "")
    assert facts["mig_enabled"] is True and facts["processes"] == []
    for name, rc, kind in [("no-driver-535.261.03.txt", 9, "no_driver"), ("mismatch-550.144.txt", 18, "mismatch"),
                           ("no-devices.txt", 6, "no_devices")]:
        facts = build_facts(fixture(name), rc, fixture(name), "")
        assert facts["failure"]["kind"] == kind and facts["gpus"] == [] and facts["driver_version"] is None
    assert set(facts) == {"gpus", "driver_version", "cuda_version", "mig_enabled", "processes", "failure"}


# --------------------------------------------------------------------------- never raises

_TOKENS = st.sampled_from(["0", "1", ", ", ",", "\n", "[N/A]", "[Not Supported]", "MiB", " %", "GPU-", "NVIDIA H100",
                           "index", "memory.total [MiB]", "pid", "Driver Version:", "CUDA Version:", "13.1", "-",
                           "Failed to initialize NVML", "No devices were found", "\x00", "é", " "])


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.lists(_TOKENS, max_size=60).map("".join)),
       rc=st.one_of(st.integers(-300, 300), st.none()))
def test_parser_never_raises(text, rc):
    assert isinstance(parse_query_gpu(text), list)
    assert isinstance(parse_query_gpu(text, ["index", "memory.used"]), list)
    assert isinstance(parse_compute_apps(text), list)
    versions = parse_header_versions(text)
    assert all(v is None or isinstance(v, str) for v in versions)
    kind, message = classify_failure(text, rc)
    assert (kind is None) == (message is None)
    facts = build_facts(text, rc if rc is not None else 0, text, text)
    assert set(facts) == {"gpus", "driver_version", "cuda_version", "mig_enabled", "processes", "failure"}
