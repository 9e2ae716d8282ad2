"""Which vLLM build (and torch CUDA backend) a pod's NVIDIA driver can run: a pure function of the facts.

Rules, with sources in shared/reference/vllm-facts.md §2:
- The CUDA *major* version binds: CUDA 13 needs a driver >= 580; any CUDA 12.x runs on >= 525.60.13
  (minor version compatibility); below that, nothing vLLM ships runs.
- vLLM >= 0.20 on PyPI is built for CUDA 13.0; its `+cu129` variant lives at https://wheels.vllm.ai/<version>/cu129.
  `--torch-backend` only picks torch's build, never vLLM's, so both are chosen here together.
- Nightly: https://wheels.vllm.ai/nightly is cu130, https://wheels.vllm.ai/nightly/cu129 the CUDA 12 variant.
- The special `vllm==0.10.1+gptoss` build is obsolete since 2025-08-20: any release >= 0.10.1 serves gpt-oss.
- CUDA 13 dropped Volta (compute capability 7.0, e.g. V100): those GPUs need the cu129 variant on any driver.

Version pins are `vllm==X` without a local label, so a lab index's `X+lab` (or vLLM's own `X+cu129`)
still matches under PEP 440.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from ..errors import PiError

DEFAULT_VLLM_VERSION = "0.33.0"
VARIANTS = ("release", "nightly", "gpt-oss")

# Every URL a build may use; the lab (or a mirror) overrides them. Placeholders: {version}, {cuda}.
DEFAULT_INDEX_URLS: dict[str, str | None] = {
    "pypi": "https://pypi.org/simple",
    "vllm_variant": "https://wheels.vllm.ai/{version}/{cuda}",
    "vllm_nightly": "https://wheels.vllm.ai/nightly",
    "vllm_nightly_variant": "https://wheels.vllm.ai/nightly/{cuda}",
    "pytorch": "https://download.pytorch.org/whl/{cuda}",
}

CUDA13_MIN_DRIVER = (580, 0, 0)
CUDA12_MIN_DRIVER = (525, 60, 13)
GPT_OSS_MIN_VLLM = Version("0.10.1")
CUDA13_DEFAULT_SINCE = Version("0.20.0")

# The highest CUDA a driver branch supports natively (the nvidia-smi header), for messages only.
_NATIVE_CUDA = {535: "12.2", 550: "12.4", 570: "12.8", 575: "12.9", 580: "13.0", 590: "13.1", 595: "13.2"}

_VOLTA = re.compile(r"\bV100\b|\bTITAN V\b|\bGV100\b", re.IGNORECASE)
_PRE_VOLTA = re.compile(
    r"\b[PKM]\d{1,3}\b|\bGTX (?:9\d0|10[5-8]0)|\bTITAN X|\bQuadro [PKM]\d", re.IGNORECASE)


class DriverTooOld(PiError):
    """The pod's NVIDIA driver cannot run the requested build; the message says how to fix it."""


@dataclass(frozen=True)
class EngineBuild:
    variant: str  # as asked: release, nightly or gpt-oss
    vllm_version: str | None  # the pinned release; None for nightly
    packages: tuple[str, ...]  # requirement specs for `uv pip install`
    cuda_variant: str  # e.g. cu130, cu129
    torch_backend: str | None  # for `--torch-backend`; None when the torch index is given as a URL
    index_url: str | None  # replaces PyPI when set
    extra_index_urls: tuple[str, ...]
    min_driver: str
    notes: tuple[str, ...] = ()

    def uv_args(self) -> list[str]:
        """Arguments after `uv`, as an argv list (a spec like vllm>=X must never meet a shell)."""
        args = ["pip", "install"]
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        if self.torch_backend:
            args += ["--torch-backend", self.torch_backend]
        return [*args, *self.packages]


def parse_driver_version(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"\s*(\d{2,4})\.(\d{1,3})(?:\.(\d{1,3}))?\s*", text) if isinstance(text, str) else None
    if not m:
        raise PiError(f"cannot read the NVIDIA driver version {text!r} (expected a form like 590.48.01); "
                      "check that `nvidia-smi` works on the pod")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _driver_cuda(driver: tuple[int, int, int], cuda_version: str | None) -> str:
    if isinstance(cuda_version, str) and re.fullmatch(r"\d{1,2}\.\d{1,2}", cuda_version.strip()):
        return cuda_version.strip()
    if driver[0] in _NATIVE_CUDA:
        return _NATIVE_CUDA[driver[0]]
    if driver >= CUDA13_MIN_DRIVER:
        return "13.x"
    if driver >= (525, 0, 0):
        return "12.x"
    return "11.x or older" if driver >= (450, 0, 0) else "10.x or older"


def default_cuda(version: Version) -> str:
    """The CUDA of vLLM's default PyPI wheel for a release (vllm-facts.md §2.3)."""
    release = (*version.release, 0, 0)
    minor = release[:2]
    if minor < (0, 7):
        return "cu121"
    if minor < (0, 9):
        return "cu124"
    if minor < (0, 15):
        return "cu128"
    if version < CUDA13_DEFAULT_SINCE:
        return "cu129"
    return "cu130"


def _urls(overrides: dict | None) -> dict[str, str | None]:
    unknown = set(overrides or {}) - set(DEFAULT_INDEX_URLS)
    if unknown:
        raise PiError(f"unknown index URL key(s) {sorted(unknown)}; known: {sorted(DEFAULT_INDEX_URLS)}")
    return {**DEFAULT_INDEX_URLS, **(overrides or {})}


def _fill(template: str, **values: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise PiError(f"index URL {template!r} has a bad placeholder ({exc}); use {{version}} and {{cuda}}") from exc


def _pin(vllm_version: str | None) -> Version:
    text = DEFAULT_VLLM_VERSION if vllm_version is None else vllm_version
    try:
        version = Version(text)
    except (InvalidVersion, TypeError) as exc:
        raise PiError(f"{text!r} is not a vLLM version; give one like {DEFAULT_VLLM_VERSION}") from exc
    if version.local:
        raise PiError(f"pin vLLM as a plain version like {version.public}, without '+{version.local}': "
                      "the CUDA variant is chosen from the pod's driver")
    return version


def choose_engine_build(variant: str, driver_version: str, cuda_version: str | None, gpu_names,
                        *, vllm_version: str | None = None, index_urls: dict | None = None) -> EngineBuild:
    """The newest vLLM build the driver can run for `variant`, or DriverTooOld before anything is installed."""
    if variant not in VARIANTS:
        raise PiError(f"unknown vLLM variant {variant!r}: use one of {', '.join(VARIANTS)}")
    gpu_names = [gpu_names] if isinstance(gpu_names, str) else [str(g) for g in gpu_names or ()]
    if not gpu_names:
        raise PiError("nvidia-smi lists no GPU on the pod, and vLLM's CUDA builds need one: "
                      "check `nvidia-smi` on the pod (driver loaded, GPUs attached), or use a pod with a GPU")
    driver = parse_driver_version(driver_version)
    driver_text = driver_version.strip()
    supports = _driver_cuda(driver, cuda_version)
    urls = _urls(index_urls)
    notes: list[str] = []

    volta = [g for g in gpu_names if _VOLTA.search(g)]
    if volta:
        notes.append(f"{volta[0]} is a Volta GPU (compute capability 7.0), which CUDA 13 no longer supports; "
                     "using a CUDA 12 build")
    else:
        old = [g for g in gpu_names if _PRE_VOLTA.search(g)]
        if old:
            notes.append(f"{old[0]} looks older than Volta; vLLM needs compute capability 7.0 or newer "
                         "and may refuse to start on it")
    cuda13_ok = driver >= CUDA13_MIN_DRIVER and not volta

    if driver < CUDA12_MIN_DRIVER:
        target = "the newest vLLM nightly" if variant == "nightly" else f"vLLM {_pin(vllm_version)}"
        raise DriverTooOld(
            f"NVIDIA driver {driver_text} is too old for {target}: it supports CUDA up to {supports}, "
            "and vLLM's builds need CUDA 13 (driver >= 580) or CUDA 12.9 (the cu129 variant, driver >= 525.60.13). "
            "Fix: upgrade the pod's NVIDIA driver to 580 or newer (or at least 525.60.13 for the cu129 build), "
            "then run `pi pods setup` again. Pinning an older vLLM does not help: every release since 0.7 needs CUDA 12.")

    if variant == "nightly":
        if cuda13_ok:
            cuda, index_key, min_driver = "cu130", "vllm_nightly", "580"
        else:
            cuda, index_key, min_driver = "cu129", "vllm_nightly_variant", "525.60.13"
        if not urls[index_key]:
            raise _no_index(driver_text, supports, volta, "the vLLM nightly", index_key)
        extra = [_fill(urls[index_key], cuda=cuda, version="nightly")]
        packages = ("vllm",)
        version = None
        notes.append("nightly: the newest vLLM nightly at install time; `--reinstall` takes a newer one")
    else:
        pin = _pin(vllm_version)
        if variant == "gpt-oss":
            if pin < GPT_OSS_MIN_VLLM:
                raise PiError(f"gpt-oss models need vLLM {GPT_OSS_MIN_VLLM} or newer, not {pin}; "
                              f"drop the pin to get {DEFAULT_VLLM_VERSION}")
            notes.append(f"gpt-oss: the special gpt-oss build (vllm==0.10.1+gptoss) is obsolete since 2025-08-20; "
                         f"installing vLLM {pin}, which serves gpt-oss (tool calls in Chat Completions need "
                         "--tool-call-parser openai)")
        packages = (f"vllm=={pin}",)
        version = str(pin)
        default = default_cuda(pin)
        extra = []
        if default != "cu130":
            cuda, min_driver = default, "525.60.13"  # a CUDA 12 build from PyPI runs on any driver >= 525.60.13
        elif cuda13_ok:
            cuda, min_driver = "cu130", "580"
        else:
            cuda, min_driver = "cu129", "525.60.13"
            if not urls["vllm_variant"]:
                raise _no_index(driver_text, supports, volta, f"vLLM {pin}", "vllm_variant")
            extra.append(_fill(urls["vllm_variant"], version=pin.public, cuda=cuda))

    native = re.fullmatch(r"(\d+)\.(\d+)", supports)
    build = (int(cuda[2:4]), int(cuda[4:]))
    if native and (int(native[1]), int(native[2])) < build:
        notes.append(f"driver {driver_text} supports CUDA {supports} natively; the {cuda} build runs on it "
                     "through CUDA minor version compatibility (no PTX JIT)")
    torch_backend = None
    pytorch = urls["pytorch"]
    if pytorch == DEFAULT_INDEX_URLS["pytorch"]:
        # uv's own backend table takes only torch-family packages from download.pytorch.org
        torch_backend = cuda
    elif pytorch:
        extra.append(_fill(pytorch, cuda=cuda, version=version or "nightly"))
    index_url = urls["pypi"] if urls["pypi"] and urls["pypi"] != DEFAULT_INDEX_URLS["pypi"] else None
    return EngineBuild(variant=variant, vllm_version=version, packages=packages, cuda_variant=cuda,
                       torch_backend=torch_backend, index_url=index_url, extra_index_urls=tuple(extra),
                       min_driver=min_driver, notes=tuple(notes))


def _no_index(driver: str, supports: str, volta: list[str], target: str, key: str) -> PiError:
    missing = f"no CUDA 12.9 variant index is configured (index URL {key!r} is empty)"
    if volta:
        return PiError(f"{volta[0]} (Volta) cannot run the CUDA 13 build of {target}, and {missing}. "
                       "Fix: set that index URL, or pin a vLLM release older than 0.20 (built for CUDA 12).")
    return DriverTooOld(
        f"NVIDIA driver {driver} supports CUDA up to {supports}, too old for the CUDA 13 build of {target} "
        f"(driver >= 580), and {missing}. Fix: upgrade the pod's NVIDIA driver to 580 or newer, "
        "or set that index URL, or pin a vLLM release older than 0.20 (built for CUDA 12).")
