"""`pi pods update`'s decisions: which pods, with which settings (each its own recorded ones), refused before any run."""

from __future__ import annotations

import pytest

from pi_ansible.errors import PiError
from pi_ansible.pod_setup import extravars, update_requests
from pi_ansible.sshargs import parse_ssh
from pi_ansible.state import State, pod_record


def state() -> State:
    s = State()
    s.add_pod("b", pod_record(parse_ssh("ssh -p 2222 root@10.0.0.2"), engine_variant="nightly", models_path="/data/m"))
    s.add_pod("a", pod_record(parse_ssh("ssh root@10.0.0.1"), models_path="/mnt/models"))
    return s


def test_every_pod_by_default_each_with_its_recorded_variant_and_models_path():
    reqs = update_requests(state(), [], index_url="http://mirror/simple", hf_endpoint="http://hub")
    assert [(r.name, r.ssh, r.vllm, r.models_path) for r in reqs] == [
        ("a", "ssh root@10.0.0.1", "release", "/mnt/models"), ("b", "ssh -p 2222 root@10.0.0.2", "nightly", "/data/m")]
    assert all((r.index_url, r.hf_endpoint, r.mount, r.reinstall) == ("http://mirror/simple", "http://hub", None, False)
               for r in reqs)
    # What each pod's host vars carry: its own variant and path, no mount (what is mounted stays as it is).
    assert [(v["vllm_env_variant"], v["model_storage_models_path"], v["model_storage_mount"])
            for v in map(extravars, reqs)] == [("release", "/mnt/models", ""), ("nightly", "/data/m", "")]


def test_named_pods_in_the_order_given_once_each():
    assert [r.name for r in update_requests(state(), ["b", "a", "b"])] == ["b", "a"]


def test_unknown_imported_and_no_pods_are_refused_with_what_to_do():
    with pytest.raises(PiError, match=r"no pod named 'zz' \(known pods: a, b\)"):
        update_requests(state(), ["a", "zz"])
    s = state()
    s.add_pod("old", {**s.pods["a"], "models_path": None, "origin": "pi-import"})
    with pytest.raises(PiError, match=r"pod old has no recorded models path .*`pi pods setup old 'ssh root@10.0.0.1' "
                                      r"--models-path PATH` once"):
        update_requests(s, [])
    with pytest.raises(PiError, match="no pods to update: set one up with `pi pods setup"):
        update_requests(State(), [])
