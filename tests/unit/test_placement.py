"""place(): GPUs by free memory (manifests and nvidia-smi processes counted), CUDA_VISIBLE_DEVICES, ports."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi_ansible.catalog import load_builtin_catalog
from pi_ansible.errors import PiError
from pi_ansible.lab.gpu_profiles import profile
from pi_ansible.planning.gpu_facts_parse import build_facts
from pi_ansible.planning.gpu_state import GpuState, gpus_from_facts
from pi_ansible.planning.placement import (
    FIRST_PORT,
    PlacementRefused,
    PlacementRequest,
    RunningModel,
    choose_configs,
    choose_port,
    gpu_usage,
    place,
)

CATALOG = load_builtin_catalog()
PROFILES = ["h100x2", "rtx4090", "h200x8", "h100-mig"]


def pod(name: str) -> list[GpuState]:
    return [GpuState.from_fact(g) for g in profile(name)["gpus"]]


def req(name="m", count=1, fraction=0.9):
    return PlacementRequest(name, count, fraction)


def test_single_gpu_model_gets_gpu_0_port_8001_and_cuda_visible_devices():
    p = place(req(), pod("h100x2"))
    assert p.gpu_indices == (0,) and p.port == FIRST_PORT
    assert p.env == {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_multi_gpu_model_also_gets_cuda_visible_devices():
    p = place(req(count=4), pod("h200x8"))
    assert p.cuda_visible_devices == "0,1,2,3" and len(set(p.gpu_uuids)) == 4


def test_second_model_goes_to_the_free_gpu_and_next_port():
    gpus = pod("h100x2")
    first = place(req("a"), gpus)
    second = place(req("b"), gpus, [RunningModel("a", first.port, first.gpu_indices, (), 0.9)], [22, first.port])
    assert second.gpu_indices == (1,) and second.port == 8002


def test_two_multi_gpu_models_never_share_gpus_on_a_full_share():
    gpus = pod("h200x8")
    a = place(req("a", 4), gpus)
    b = place(req("b", 4), gpus, [RunningModel("a", a.port, a.gpu_indices, (), 0.9)])
    assert set(a.gpu_indices).isdisjoint(b.gpu_indices) and b.cuda_visible_devices == "4,5,6,7"


def test_half_shares_stack_on_one_gpu_free_ones_first():
    gpus = pod("h100x2")
    a = place(req("a", fraction=0.45), gpus)
    b = place(req("b", fraction=0.45), gpus, [RunningModel("a", 8001, a.gpu_indices, (), 0.45)])
    assert b.gpu_indices == (1,)  # the unused GPU first
    running = [RunningModel("a", 8001, (0,), (), 0.45), RunningModel("b", 8002, (1,), (), 0.45)]
    c = place(req("c", fraction=0.45), gpus, running)
    assert c.gpu_indices in ((0,), (1,)) and c.port == 8003
    running.append(RunningModel("c", 8003, c.gpu_indices, (), 0.45))
    d = place(req("d", fraction=0.45), gpus, running)
    assert d.gpu_indices != c.gpu_indices
    running.append(RunningModel("d", d.port, d.gpu_indices, (), 0.45))
    with pytest.raises(PlacementRefused):
        place(req("e", fraction=0.45), gpus, running)


def test_processes_not_started_by_us_count():
    gpus = pod("h100x2")
    hog = [{"pid": 11327, "process_name": "/root/tools/memhog", "gpu_uuid": gpus[0].uuid, "used_memory_mib": 20000}]
    busy = [replace(gpus[0], memory_used_mib=20000, memory_free_mib=81559 - 479 - 20000), gpus[1]]
    assert place(req(), busy, processes=hog).gpu_indices == (1,)
    with pytest.raises(PlacementRefused) as err:
        place(req(count=2), busy, processes=hog)
    assert "GPU 0" in str(err.value) and err.value.max_share == pytest.approx(0.74)


def test_a_starting_model_books_its_share_before_nvidia_smi_shows_it():
    gpus = pod("h100x2")  # nothing used yet
    usage = gpu_usage(gpus, [RunningModel("a", 8001, (0,), (), 0.9)])
    assert usage[0].booked_mib == math.ceil(81559 * 0.9) and usage[0].models == ("a",)
    assert not usage[0].idle and usage[1].idle


def test_a_running_models_engine_process_is_not_counted_twice():
    gpus = pod("h100x2")
    used = math.ceil(81559 * 0.9)
    g0 = replace(gpus[0], memory_used_mib=used, memory_free_mib=81559 - 479 - used)
    procs = [{"pid": 4242, "process_name": "VLLM::EngineCore", "gpu_uuid": g0.uuid, "used_memory_mib": used}]
    usage = gpu_usage([g0, gpus[1]], [RunningModel("a", 8001, (0,), (), 0.9)], procs)
    assert usage[0].booked_mib == used


def test_manifest_gpus_by_uuid_win_over_stale_indices():
    gpus = pod("h100x2")
    m = RunningModel.from_manifest({"name": "a", "port": 8001, "gpus": [{"index": 0, "uuid": gpus[1].uuid}],
                                    "memory_fraction": 0.9})
    assert gpu_usage(gpus, [m])[1].models == ("a",)


def test_manifest_reading_is_tolerant():
    m = RunningModel.from_manifest({"name": "x", "port": "8001", "gpus": ["1", "GPU-abc", True], "pid": 7,
                                    "memory_fraction": 3})
    assert (m.port, m.gpus, m.gpu_uuids, m.pids, m.memory_fraction) == (None, (1,), ("GPU-abc",), (7,), None)
    # an unknown share is taken as vLLM's default 0.92
    assert gpu_usage(pod("h100x2"), [RunningModel("x", None, (0,))])[0].booked_mib == math.ceil(81559 * 0.92)


def test_ports_skip_listening_and_manifest_ports():
    running = [RunningModel("a", 8001), RunningModel("b", 8003)]
    assert choose_port([8002, 22], running) == 8004
    assert choose_port([]) == 8001
    with pytest.raises(PiError, match="no free port"):
        choose_port(range(8001, 65536))


def test_name_taken_and_too_few_gpus_and_bad_requests():
    gpus = pod("h100x2")
    with pytest.raises(PiError, match="already on this pod"):
        place(req("a"), gpus, [RunningModel("a", 8001, (0,), (), 0.5)])
    with pytest.raises(PiError, match="pod has 2"):
        place(req(count=4), gpus)
    for bad in (req(count=0), req(fraction=0), req(fraction=1.2)):
        with pytest.raises(PiError):
            place(bad, gpus)


def test_mig_gpus_are_never_chosen():
    with pytest.raises(PlacementRefused, match="MIG enabled"):
        place(req(fraction=0.1), pod("h100-mig"))


def test_works_from_real_nvidia_smi_facts():
    csv = ("0, GPU-e132d16d-fe10-de80-9b80-63b7f04fbdfd, NVIDIA H100 80GB HBM3, 00000000:00:09.0, 81559, 479, 0, 81080, 0, "
           "590.48.01, 9.0, Disabled\n"
           "1, GPU-b0354a1a-37c2-086d-f6fe-953b6fac5c3e, NVIDIA H100 80GB HBM3, 00000000:00:0A.0, 81559, 479, 37155, 43925, 0, "
           "590.48.01, 9.0, Disabled\n")
    apps = "pid, process_name, gpu_uuid, used_gpu_memory [MiB]\n999, python, GPU-b0354a1a-37c2-086d-f6fe-953b6fac5c3e, 37155 MiB\n"
    facts = build_facts(csv, 0, "", apps)
    gpus = gpus_from_facts(facts)
    assert [g.free_mib for g in gpus] == [81080, 43925]
    p = place(req(count=1, fraction=0.5), gpus, processes=facts["processes"])
    assert p.gpu_indices == (0,)
    q = place(req("b", fraction=0.5), gpus, [RunningModel("m", p.port, p.gpu_indices, (), 0.5)],
              processes=facts["processes"])
    assert q.gpu_indices == (1,)  # 43,925 MiB free ≥ 40,780 MiB


# --- config choice -------------------------------------------------------------------------------

def test_gpus_k_without_a_config_lists_the_counts_that_exist():
    e = CATALOG.get("openai/gpt-oss-120b")
    with pytest.raises(PiError) as err:
        choose_configs(e, pod("h200x8"), 3)
    assert "no config for 3 GPU(s)" in str(err.value) and "1, 2, 4, 8" in str(err.value)
    assert "--vllm" in str(err.value)


def test_gpus_k_picks_the_matching_type_first():
    e = CATALOG.get("openai/gpt-oss-20b")
    assert choose_configs(e, pod("h100x2"), 1)[0].gpu_types == ("H100", "H200")
    assert [c.gpu_count for c in choose_configs(e, pod("h100x2"), 1)] == [1, 1]


def test_without_gpus_the_fewest_gpus_of_the_pods_type_first():
    e = CATALOG.get("zai-org/GLM-4.5-Air-FP8")
    assert next((c.gpu_count, c.gpu_types) for c in choose_configs(e, pod("h200x8"))) == (1, ("H200",))
    assert next((c.gpu_count, c.gpu_types) for c in choose_configs(e, pod("h100x2"))) == (2, ("H100",))


def test_too_small_a_pod_for_every_config():
    with pytest.raises(PiError, match="at least 8 GPUs"):
        choose_configs(CATALOG.get("zai-org/GLM-4.6"), pod("h100x2"))
    with pytest.raises(PiError, match="the pod has 2"):
        choose_configs(CATALOG.get("openai/gpt-oss-120b"), pod("h100x2"), 8)


@pytest.mark.parametrize("pod_name", PROFILES)
@pytest.mark.parametrize("model", [e.id for e in CATALOG])
def test_placement_for_every_model_profile_and_count(model, pod_name):
    gpus = pod(pod_name)
    whole = [g for g in gpus if not g.mig_enabled]
    for count in (1, 2, 4, 8):
        try:
            configs = choose_configs(CATALOG.get(model), gpus, count)
        except PiError as e:
            assert count > len(gpus) or "no config" in str(e)
            continue
        assert all(c.gpu_count == count for c in configs)
        if count > len(whole):
            with pytest.raises(PiError):
                place(req(count=count), gpus)
            continue
        p = place(req(count=count), gpus)
        assert len(p.gpu_indices) == count == len(p.cuda_visible_devices.split(","))
        assert p.port == FIRST_PORT and all(u.free_mib <= u.total_mib for u in p.usage)


# --- property: no double booking, no port reuse --------------------------------------------------

SIZES = [81559, 143771, 24564, 46068]


@st.composite
def pods(draw):
    n = draw(st.integers(1, 8))
    total = draw(st.sampled_from(SIZES))
    gpus = []
    for i in range(n):
        used = draw(st.sampled_from([0, 0, 0, 500, 20_000]))
        gpus.append(GpuState(index=i, uuid=f"GPU-{i:08x}-0000-0000-0000-000000000000", name="G",
                             memory_total_mib=total, memory_used_mib=min(used, total // 2),
                             memory_reserved_mib=479))
    procs = [{"pid": 10_000 + g.index, "process_name": "other", "gpu_uuid": g.uuid, "used_memory_mib": g.memory_used_mib}
             for g in gpus if g.memory_used_mib]
    return gpus, procs


@settings(max_examples=300, deadline=None)
@given(pods(), st.lists(st.tuples(st.integers(1, 4), st.sampled_from([0.1, 0.25, 0.3, 0.45, 0.5, 0.9, 0.95])),
                        min_size=1, max_size=12),
       st.sets(st.integers(8001, 8010), max_size=5))
def test_property_no_gpu_double_booked_and_no_port_reused(pod_and_procs, requests, listening):
    gpus, procs = pod_and_procs
    running: list[RunningModel] = []
    for n, (count, fraction) in enumerate(requests):
        try:
            p = place(PlacementRequest(f"m{n}", count, fraction), gpus, running, listening, processes=procs)
        except PiError:
            continue
        assert len(set(p.gpu_indices)) == count
        assert p.port not in listening and p.port not in {m.port for m in running}
        running.append(RunningModel(f"m{n}", p.port, p.gpu_indices, (), fraction))
    for g in gpus:
        booked = sum(math.ceil(g.memory_total_mib * m.memory_fraction) for m in running if g.index in m.gpus)
        assert g.memory_reserved_mib + g.memory_used_mib + booked <= g.memory_total_mib
    assert len({m.port for m in running}) == len(running)
