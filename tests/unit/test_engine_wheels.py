"""The vLLM build for a driver: real driver -> CUDA pairs (vllm-facts.md §1.3, §2.1) for each variant."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.version import Version

from pi_ansible.errors import PiError
from pi_ansible.planning.engine_wheels import (
    DEFAULT_INDEX_URLS,
    DEFAULT_VLLM_VERSION,
    DriverTooOld,
    EngineBuild,
    choose_engine_build,
    default_cuda,
    parse_driver_version,
)

H100 = ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]
V = DEFAULT_VLLM_VERSION

# (driver, nvidia-smi header CUDA, expected CUDA build): the major version binds, 580 is the line
PAIRS = [
    ("535.129.03", "12.2", "cu129"),
    ("550.54.15", "12.4", "cu129"),
    ("550.144.03", "12.4", "cu129"),
    ("570.124.06", "12.8", "cu129"),
    ("575.51.03", "12.9", "cu129"),
    ("580.126.09", "13.0", "cu130"),
    ("580.105.06", None, "cu130"),  # vGPU guest: "CUDA Version : Not Found"
    ("590.48.01", "13.1", "cu130"),
    ("595.80", "13.2", "cu130"),
    ("595.71.05", "13.2", "cu130"),
    ("610.57.04", None, "cu130"),
    ("525.60.13", "12.0", "cu129"),  # the exact CUDA 12 minimum (uv's table)
]
TOO_OLD = [("525.60.12", "12.0"), ("470.82.01", "11.4"), ("450.80.02", "11.0"), ("418.67", "10.1")]


@pytest.mark.parametrize(("driver", "cuda", "build"), PAIRS)
def test_release(driver, cuda, build):
    b = choose_engine_build("release", driver, cuda, H100)
    assert b.cuda_variant == build and b.torch_backend == build
    assert b.packages == (f"vllm=={V}",) and b.vllm_version == V
    if build == "cu130":
        assert b.extra_index_urls == () and b.min_driver == "580"
        assert b.uv_args() == ["pip", "install", "--torch-backend", "cu130", f"vllm=={V}"]
    else:
        assert b.extra_index_urls == (f"https://wheels.vllm.ai/{V}/cu129",) and b.min_driver == "525.60.13"
        assert b.uv_args() == ["pip", "install", "--extra-index-url", f"https://wheels.vllm.ai/{V}/cu129",
                               "--torch-backend", "cu129", f"vllm=={V}"]
    assert b.index_url is None  # PyPI, or whatever the pod's uv is configured with


@pytest.mark.parametrize(("driver", "cuda", "build"), PAIRS)
def test_nightly(driver, cuda, build):
    b = choose_engine_build("nightly", driver, cuda, H100)
    assert b.cuda_variant == build and b.packages == ("vllm",) and b.vllm_version is None
    url = "https://wheels.vllm.ai/nightly" if build == "cu130" else "https://wheels.vllm.ai/nightly/cu129"
    assert b.uv_args() == ["pip", "install", "--extra-index-url", url, "--torch-backend", build, "vllm"]
    assert any("nightly" in n for n in b.notes)


@pytest.mark.parametrize(("driver", "cuda", "build"), PAIRS)
def test_gpt_oss_maps_to_a_release_and_says_so(driver, cuda, build):
    b = choose_engine_build("gpt-oss", driver, cuda, H100)
    release = choose_engine_build("release", driver, cuda, H100)
    assert b.variant == "gpt-oss"
    assert b.uv_args() == release.uv_args()
    assert "+gptoss" not in " ".join(b.uv_args())
    note = b.notes[0]
    assert note.startswith("gpt-oss: the special gpt-oss build (vllm==0.10.1+gptoss) is obsolete since 2025-08-20")
    assert f"installing vLLM {V}, which serves gpt-oss" in note


@pytest.mark.parametrize("variant", ["release", "nightly", "gpt-oss"])
@pytest.mark.parametrize(("driver", "cuda"), TOO_OLD)
def test_too_old_driver_is_refused_with_the_fix(variant, driver, cuda):
    with pytest.raises(DriverTooOld) as info:
        choose_engine_build(variant, driver, cuda, H100)
    message = str(info.value)
    assert f"NVIDIA driver {driver} is too old" in message
    assert f"supports CUDA up to {cuda}" in message
    assert "upgrade the pod's NVIDIA driver to 580 or newer" in message
    assert "525.60.13 for the cu129 build" in message
    assert isinstance(info.value, PiError)


def test_too_old_without_header_cuda_guesses_from_the_driver():
    with pytest.raises(DriverTooOld, match=r"supports CUDA up to 11\.x or older"):
        choose_engine_build("release", "470.82.01", None, H100)


@pytest.mark.parametrize("garbage", ["", "garbage", "590", "N/A", "590.48.01.7", "v590.48", "590.48.01\n1", None])
def test_garbage_driver_version(garbage):
    with pytest.raises(PiError, match="cannot read the NVIDIA driver version") as info:
        choose_engine_build("release", garbage, "13.1", H100)
    assert not isinstance(info.value, DriverTooOld)


def test_driver_version_parsing():
    assert parse_driver_version("590.48.01") == (590, 48, 1)
    assert parse_driver_version(" 595.80 ") == (595, 80, 0)
    assert parse_driver_version("525.60.13") > parse_driver_version("525.60.2")


def test_header_cuda_is_only_for_messages():
    # a nonsense header never overrides the driver rule
    assert choose_engine_build("release", "550.54.15", "13.0", H100).cuda_variant == "cu129"
    assert choose_engine_build("release", "590.48.01", "12.2", H100).cuda_variant == "cu130"
    assert choose_engine_build("release", "590.48.01", "Not Found", H100).cuda_variant == "cu130"


def test_minor_version_compat_note():
    b = choose_engine_build("release", "535.129.03", "12.2", H100)
    assert any("supports CUDA 12.2 natively; the cu129 build runs on it" in n for n in b.notes)
    assert not choose_engine_build("release", "575.51.03", "12.9", H100).notes


# ---- pins and older releases ------------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "cuda"), [
    ("0.6.3", "cu121"), ("0.7.0", "cu124"), ("0.8.5", "cu124"), ("0.9.0", "cu128"), ("0.10.1", "cu128"),
    ("0.14.1", "cu128"), ("0.15.0", "cu129"), ("0.19.1", "cu129"), ("0.20.0rc1", "cu129"), ("0.20.0", "cu130"),
    ("0.25.1", "cu130"), ("0.33.0", "cu130"), ("1.0", "cu130"),
])
def test_default_cuda_per_release(version, cuda):
    assert default_cuda(Version(version)) == cuda


@pytest.mark.parametrize("driver", ["550.54.15", "590.48.01"])
def test_older_release_pin_uses_its_cuda12_wheel_from_pypi(driver):
    b = choose_engine_build("release", driver, None, H100, vllm_version="0.14.1")
    assert b.uv_args() == ["pip", "install", "--torch-backend", "cu128", "vllm==0.14.1"]
    assert b.min_driver == "525.60.13"


def test_variant_url_uses_the_pinned_version():
    b = choose_engine_build("release", "550.54.15", "12.4", H100, vllm_version="0.25.1")
    assert b.extra_index_urls == ("https://wheels.vllm.ai/0.25.1/cu129",)


@pytest.mark.parametrize(("pin", "fragment"), [
    ("latest", "is not a vLLM version"), ("0.33.0+cu129", "without '+cu129'"), ("", "is not a vLLM version"),
])
def test_bad_pins(pin, fragment):
    with pytest.raises(PiError, match=fragment.replace("+", r"\+")):
        choose_engine_build("release", "590.48.01", "13.1", H100, vllm_version=pin)


def test_gpt_oss_needs_0_10_1():
    with pytest.raises(PiError, match=r"gpt-oss models need vLLM 0\.10\.1 or newer, not 0\.10\.0"):
        choose_engine_build("gpt-oss", "590.48.01", "13.1", H100, vllm_version="0.10.0")
    assert choose_engine_build("gpt-oss", "590.48.01", "13.1", H100, vllm_version="0.10.1").packages == (
        "vllm==0.10.1",)


@pytest.mark.parametrize("local", ["0.33.0+lab", "0.33.0+cu129", "0.33.0+cu130", "0.33.0"])
def test_spec_matches_local_builds_per_pep440(local):
    spec = Requirement(choose_engine_build("release", "590.48.01", "13.1", H100).packages[0])
    assert spec.name == "vllm"
    assert spec.specifier.contains(Version(local))
    assert not spec.specifier.contains(Version("0.33.1+lab"))


# ---- index URLs (the lab points them at its own index) ---------------------------------------------------

LAB = "http://10.77.0.1:8080/simple"


def test_lab_index_replaces_every_url():
    urls = {"pypi": LAB, "vllm_variant": LAB, "vllm_nightly": LAB, "vllm_nightly_variant": LAB, "pytorch": None}
    b = choose_engine_build("release", "590.48.01", "13.1", H100, index_urls=urls)
    assert b.uv_args() == ["pip", "install", "--index-url", LAB, f"vllm=={V}"]
    old = choose_engine_build("release", "550.54.15", "12.4", H100, index_urls=urls)
    assert old.uv_args() == ["pip", "install", "--index-url", LAB, "--extra-index-url", LAB, f"vllm=={V}"]
    nightly = choose_engine_build("nightly", "590.48.01", "13.1", H100, index_urls=urls)
    assert nightly.uv_args() == ["pip", "install", "--index-url", LAB, "--extra-index-url", LAB, "vllm"]
    assert all("pytorch.org" not in a and "wheels.vllm.ai" not in a
               for b in (b, old, nightly) for a in b.uv_args())


def test_mirrored_pytorch_index_is_an_extra_url_not_a_backend():
    b = choose_engine_build("release", "550.54.15", "12.4", H100,
                            index_urls={"pytorch": "https://mirror.example/torch/{cuda}"})
    assert b.torch_backend is None and b.cuda_variant == "cu129"
    assert b.extra_index_urls == (f"https://wheels.vllm.ai/{V}/cu129", "https://mirror.example/torch/cu129")


def test_templates_fill_version_and_cuda():
    b = choose_engine_build("release", "550.54.15", "12.4", H100,
                            index_urls={"vllm_variant": "https://idx.example/vllm/{version}/{cuda}/simple"})
    assert b.extra_index_urls == (f"https://idx.example/vllm/{V}/cu129/simple",)


@pytest.mark.parametrize("variant", ["release", "nightly"])
def test_disabled_cu129_index_refuses_old_drivers_with_the_fix(variant):
    key = "vllm_variant" if variant == "release" else "vllm_nightly_variant"
    with pytest.raises(DriverTooOld) as info:
        choose_engine_build(variant, "550.54.15", "12.4", H100, index_urls={key: None})
    message = str(info.value)
    assert "NVIDIA driver 550.54.15 supports CUDA up to 12.4" in message
    assert "upgrade the pod's NVIDIA driver to 580 or newer" in message
    assert "pin a vLLM release older than 0.20" in message
    # a new enough driver never needs that index
    assert choose_engine_build(variant, "590.48.01", "13.1", H100, index_urls={key: None}).cuda_variant == "cu130"


def test_unknown_index_key_and_bad_template():
    with pytest.raises(PiError, match="unknown index URL key"):
        choose_engine_build("release", "590.48.01", "13.1", H100, index_urls={"pip": LAB})
    with pytest.raises(PiError, match="bad placeholder"):
        choose_engine_build("release", "550.54.15", "12.4", H100, index_urls={"vllm_variant": "https://x/{cudaa}"})


def test_defaults_are_the_public_urls():
    assert DEFAULT_INDEX_URLS == {
        "pypi": "https://pypi.org/simple",
        "vllm_variant": "https://wheels.vllm.ai/{version}/{cuda}",
        "vllm_nightly": "https://wheels.vllm.ai/nightly",
        "vllm_nightly_variant": "https://wheels.vllm.ai/nightly/{cuda}",
        "pytorch": "https://download.pytorch.org/whl/{cuda}",
    }


# ---- GPUs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["release", "nightly"])
def test_volta_gets_a_cuda12_build_even_on_a_new_driver(variant):
    b = choose_engine_build(variant, "590.48.01", "13.1", ["Tesla V100-SXM2-32GB"])
    assert b.cuda_variant == "cu129"
    assert any("Volta" in n for n in b.notes)
    with pytest.raises(PiError, match="Volta") as info:
        choose_engine_build(variant, "590.48.01", "13.1", ["Tesla V100-SXM2-32GB"],
                            index_urls={"vllm_variant": None, "vllm_nightly_variant": None})
    assert not isinstance(info.value, DriverTooOld)


@pytest.mark.parametrize("name", ["Tesla P100-PCIE-16GB", "Tesla P40", "NVIDIA GeForce GTX 1080 Ti", "Tesla K80",
                                  "Quadro P6000", "NVIDIA TITAN Xp", "Tesla M60"])
def test_pre_volta_gpus_get_a_warning(name):
    assert any("older than Volta" in n for n in choose_engine_build("release", "535.129.03", "12.2", [name]).notes)


@pytest.mark.parametrize("name", ["NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-40GB", "Tesla T4",
                                  "NVIDIA L40S", "NVIDIA GeForce RTX 4090", "NVIDIA B200", "NVIDIA L4",
                                  "NVIDIA RTX A6000", "NVIDIA A100-PCIE-40GB", "NVIDIA GeForce RTX 2080 SUPER",
                                  "NVIDIA H100 80GB HBM3 MIG 1g.10gb"])
def test_modern_gpus_get_no_warning(name):
    assert choose_engine_build("release", "590.48.01", "13.1", [name]).notes == ()


@pytest.mark.parametrize("gpus", [[], None, ()])
def test_no_gpu_is_refused(gpus):
    with pytest.raises(PiError, match="nvidia-smi lists no GPU"):
        choose_engine_build("release", "590.48.01", "13.1", gpus)


def test_unknown_variant():
    with pytest.raises(PiError, match="unknown vLLM variant 'stable': use one of release, nightly, gpt-oss"):
        choose_engine_build("stable", "590.48.01", "13.1", H100)


def test_build_is_frozen():
    b = choose_engine_build("release", "590.48.01", "13.1", H100)
    assert isinstance(b, EngineBuild)
    with pytest.raises(AttributeError):
        b.cuda_variant = "cu129"  # type: ignore[misc]


@given(st.sampled_from(["release", "nightly", "gpt-oss"]), st.text(max_size=20), st.one_of(st.none(), st.text(max_size=6)),
       st.lists(st.text(max_size=30), max_size=3))
def test_fuzz_only_pierrors(variant, driver, cuda, gpus):
    try:
        b = choose_engine_build(variant, driver, cuda, gpus)
    except PiError:
        return
    assert b.uv_args()[:2] == ["pip", "install"]


@given(st.integers(0, 999), st.integers(0, 999), st.integers(0, 99))
def test_fuzz_driver_numbers_follow_the_thresholds(major, minor, patch):
    driver = f"{major}.{minor:02d}.{patch:02d}"
    try:
        b = choose_engine_build("release", driver, None, H100)
    except DriverTooOld:
        assert (major, minor, patch) < (525, 60, 13)
        return
    except PiError:
        assert major < 10  # the parser wants 2 to 4 digits
        return
    assert b.cuda_variant == ("cu130" if major >= 580 else "cu129")
