"""`vllm serve`: the startup sequence of vLLM 0.33, its checks in their real order, and shutdown.

API server: version and non-default args, tool-parser check, port bound (before anything slow),
engine config (device, model config from the Hub, max model len, parallel sizes). Engine core:
free-memory check, weights, KV cache. Then the HTTP server, until SIGTERM/SIGINT. Every failure
prints the text and the traceback shape the real release prints, and exits non-zero.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from vllm import __version__, _log, fit, gpus
from vllm import args as cli_args
from vllm._log import frame
from vllm.families import REASONING_PARSERS, TOOL_PARSERS, family_of
from vllm.knobs import Knobs
from vllm.metrics import Stats
from vllm.model_info import GiB, MiB, ModelFilesError, facts, load_model_files
from vllm.server import ROUTES, App, Server

CONSERVING = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"


class Exit(Exception):
    """Leave `vllm serve` with this status (the failure was printed already)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class Terminated(Exception):
    """SIGTERM/SIGINT before the server runs (vLLM raises KeyboardInterrupt("terminated"))."""


def _api_fail(frames: list, exc_line: str, cause=None) -> Exit:
    _log.print_traceback(_log.cli_frames() + frames, exc_line, "APIServer", cause)
    return Exit(1)


def _pydantic(cls: str, message: str, args: dict) -> str:
    inputs = ", ".join(f"'{k}': {v!r}" for k, v in args.items())
    return (
        f"pydantic_core._pydantic_core.ValidationError: 1 validation error for {cls}\n"
        f"  Value error, {message} [type=value_error, input_value=ArgsKwargs((), {{{inputs}}}), "
        f"input_type=ArgsKwargs]\n    For further information visit https://errors.pydantic.dev/2.12/v/value_error"
    )


_ENGINE_ARGS_FRAMES = [
    frame(
        "entrypoints/launchers/api_server/entry.py",
        212,
        "run_server",
        "await run_server_worker(listen_address, sock, args, **uvicorn_kwargs)",
    ),
    frame(
        "entrypoints/launchers/api_server/entry.py",
        230,
        "run_server_worker",
        "async with build_async_engine_client(",
    ),
    frame(
        "entrypoints/launchers/api_server/entry.py",
        96,
        "build_async_engine_client",
        "async with build_async_engine_client_from_engine_args(",
    ),
    frame(
        "entrypoints/launchers/api_server/entry.py",
        122,
        "build_async_engine_client_from_engine_args",
        "vllm_config = engine_args.create_engine_config(usage_context=usage_context)",
    ),
]


class ServeCommand:
    def __init__(self, ns):
        self.ns = ns
        self.knobs = Knobs.from_env()
        self.pid = os.getpid()
        self.registration = gpus.Registration(self.pid)
        self.stop = threading.Event()
        self.signal_name: str | None = None
        self.serving = False
        atexit.register(self.registration.remove)

    # -- signals --------------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        self.signal_name = signal.Signals(signum).name
        if self.serving:
            self.stop.set()
        elif not self.stop.is_set():
            self.stop.set()
            raise Terminated()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.05, left))

    # -- entry ----------------------------------------------------------------------------------
    def run(self) -> int:
        ns = self.ns
        if ns.enable_auto_tool_choice and not ns.tool_call_parser:
            _log.print_traceback(
                [
                    *_log.cli_frames()[:1],
                    frame("entrypoints/cli/main.py", 150, "main", "selected_command.validate(args)"),
                    frame("entrypoints/cli/serve.py", 131, "validate", "validate_parsed_serve_args(args)"),
                    frame(
                        "entrypoints/launchers/cli_args.py",
                        402,
                        "validate_parsed_serve_args",
                        'raise TypeError("Error: --enable-auto-tool-choice requires --tool-call-parser")',
                    ),
                ],
                "TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser",
                None,
            )
            return 1
        _log.decorate()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            return self._run()
        except Exit as e:
            return e.code
        except Terminated:
            _log.print_traceback(
                [
                    *_log.cli_frames(),
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        205,
                        "_interrupt_init",
                        'raise KeyboardInterrupt("terminated")',
                    ),
                ],
                "KeyboardInterrupt: terminated",
            )
            return 1
        finally:
            self.registration.remove()

    def _run(self) -> int:
        self._log_startup()
        self._validate_api_server_args()
        sock, listen = self._bind()
        try:
            app, shutdown_timeout = self._start_engine(listen)
            return self._serve(sock, app, listen, shutdown_timeout)
        finally:
            sock.close()

    def _log_startup(self) -> None:
        ns = self.ns
        if cli_args.env_flag("VLLM_DISABLE_LOG_LOGO"):
            _log.info("api_utils.py:347", f"vLLM server version {__version__}, serving model {ns.model}")
        else:
            logo = (
                "\n       █     █     █▄   ▄█\n"
                f" ▄▄ ▄█ █     █     █ ▀▄▀ █  version {__version__}\n"
                f"  █▄█▀ █     █     █     █  model   {ns.model}\n"
                "   ▀▀  ▀▀▀▀▀ ▀▀▀▀▀ ▀     ▀\n"
            )
            _log.info("api_utils.py:347", logo)
        _log.info("api_utils.py:286", f"non-default args: {cli_args.redact(cli_args.non_default_args(ns))}")
        for name in sorted(k for k in os.environ if k.startswith("VLLM_") and k not in _KNOWN_ENVS):
            _log.warning("envs.py:2239", f"Unknown vLLM environment variable detected: {name}")

    def _validate_api_server_args(self) -> None:
        ns = self.ns
        if ns.enable_auto_tool_choice and ns.tool_call_parser not in TOOL_PARSERS:
            raise _api_fail(
                [
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        211,
                        "run_server",
                        "listen_address, sock = setup_server(args)",
                    ),
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        160,
                        "setup_server",
                        "validate_api_server_args(args)",
                    ),
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        136,
                        "validate_api_server_args",
                        "raise KeyError(",
                    ),
                ],
                f"KeyError: 'invalid tool call parser: {ns.tool_call_parser} (chose from {{ {','.join(TOOL_PARSERS)} }})'",
            )

    def _bind(self) -> tuple[socket.socket, str]:
        ns = self.ns
        host = ns.host or ""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, ns.port))
        except OSError as e:
            sock.close()
            raise _api_fail(
                [
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        211,
                        "run_server",
                        "listen_address, sock = setup_server(args)",
                    ),
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        170,
                        "setup_server",
                        "sock = create_server_socket(sock_addr)",
                    ),
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        118,
                        "create_server_socket",
                        "sock.bind(addr)",
                    ),
                ],
                f"OSError: [Errno {e.errno}] {e.strerror}",
            ) from None
        shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
        return sock, f"http://{shown}:{ns.port}"

    # -- engine ---------------------------------------------------------------------------------
    def _start_engine(self, listen: str):
        ns = self.ns
        profile = gpus.load_profile()
        if not gpus.driver_works(profile):
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES,
                    frame(
                        "engine/arg_utils.py",
                        1688,
                        "create_engine_config",
                        "device_config = DeviceConfig(device=cast(Device, current_platform.device_type))",
                    ),
                    frame("config/device.py", 58, "__post_init__", "raise RuntimeError("),
                ],
                "RuntimeError: Failed to infer device type, please set the environment variable "
                "`VLLM_LOGGING_LEVEL=DEBUG` to turn on verbose logging to help debug the issue.",
            )
        f, config = self._model_config()
        _log.info("model.py:684", f"Resolved architecture: {f.architecture}")
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        if cvd is not None and cvd.split(",") == [""]:
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES,
                    frame(
                        "engine/arg_utils.py",
                        1712,
                        "create_engine_config",
                        "model_config = self.create_model_config()",
                    ),
                    frame(
                        "platforms/cuda.py", 74, "device_id_to_physical_device_id", "raise RuntimeError(msg)"
                    ),
                ],
                "RuntimeError: CUDA_VISIBLE_DEVICES is set to empty string, which means GPU support is disabled. "
                "If you are using ray, please unset the environment variable `CUDA_VISIBLE_DEVICES` inside the "
                "worker/actor. Check https://github.com/vllm-project/vllm/issues/8402 for more information.",
            )
        max_len = ns.max_model_len
        if (
            max_len is not None
            and max_len != -1
            and max_len > f.derived_max_len
            and not cli_args.env_flag("VLLM_ALLOW_LONG_MAX_MODEL_LEN")
        ):
            msg = (
                f"User-specified max_model_len ({max_len}) is greater than the derived max_model_len "
                f"({f.derived_max_len_key}={f.derived_max_len} or model_max_length=None in model's config.json). "
                "To allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. "
                "VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with extreme caution. If the model uses relative "
                "position encoding (RoPE), positions exceeding derived_max_model_len lead to nan. If the model "
                "uses absolute position encoding, positions exceeding derived_max_model_len will cause a CUDA "
                "array out-of-bounds error."
            )
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES,
                    frame(
                        "engine/arg_utils.py",
                        1712,
                        "create_engine_config",
                        "model_config = self.create_model_config()",
                    ),
                    frame("engine/arg_utils.py", 1402, "create_model_config", "return ModelConfig("),
                ],
                _pydantic("ModelConfig", msg, {"model": ns.model, "max_model_len": max_len}),
            )
        if max_len is None or max_len == -1:
            _log.info("model.py:2021", f"Using max model len {f.derived_max_len}")
        else:
            _log.info("model.py:2021", f"Using max model len {max_len}")
        tp, pp, dp = ns.tensor_parallel_size or 1, ns.pipeline_parallel_size or 1, ns.data_parallel_size or 1
        devices = gpus.visible(gpus.cuda_devices(profile), cvd)
        limits = fit.default_limits(
            devices[0].total_mib if devices else 81559, ns.max_num_batched_tokens, ns.max_num_seqs
        )
        _log.info(
            "scheduler.py:231",
            f"Chunked prefill is enabled with max_num_batched_tokens={limits.max_num_batched_tokens}.",
        )
        parallel_args = {"pipeline_parallel_size": pp, "tensor_parallel_size": tp, "data_parallel_size": dp}
        if f.num_heads % tp:
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES,
                    frame("engine/arg_utils.py", 1893, "create_engine_config", "config = VllmConfig("),
                ],
                _pydantic(
                    "VllmConfig",
                    f"Total number of attention heads ({f.num_heads}) must be divisible by tensor "
                    f"parallel size ({tp}).",
                    {"tensor_parallel_size": tp},
                ),
            )
        world = tp * pp
        if world > 1 and len(devices) < world:
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES,
                    frame(
                        "engine/arg_utils.py",
                        1801,
                        "create_engine_config",
                        "parallel_config = ParallelConfig(",
                    ),
                ],
                _pydantic(
                    "ParallelConfig",
                    f"World size ({world}) is larger than the number of available GPUs "
                    f"({len(devices)}) in this node. If this is intentional and you are using:\n"
                    "- ray, set '--distributed-executor-backend ray'.\n"
                    "- multiprocessing, set '--nnodes' appropriately.",
                    parallel_args,
                ),
            )
        return self._engine_core(f, config, devices[: world * dp], limits, tp, pp, listen)

    def _model_config(self):
        ns = self.ns
        from huggingface_hub.errors import GatedRepoError

        try:
            config, index = load_model_files(
                ns.model, revision=ns.revision, token=ns.hf_token, download_dir=ns.download_dir
            )
        except (GatedRepoError, ModelFilesError) as e:
            cause_exc = e if isinstance(e, GatedRepoError) else e.cause
            cause = None
            if cause_exc is not None:
                cname = f"{type(cause_exc).__module__}.{type(cause_exc).__name__}"
                cname = cname.replace("huggingface_hub.errors.", "huggingface_hub.errors.")
                cause = (
                    [
                        frame(
                            "transformers_utils/repo_utils.py",
                            88,
                            "file_or_path_exists",
                            "return file_exists(str(model), config_name, revision=revision)",
                        )
                    ],
                    f"{cname}: {cause_exc}",
                )
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES,
                    frame(
                        "engine/arg_utils.py",
                        1712,
                        "create_engine_config",
                        "model_config = self.create_model_config()",
                    ),
                    frame("config/model.py", 611, "__post_init__", "hf_config = get_config("),
                    frame(
                        "transformers_utils/config.py",
                        653,
                        "get_config",
                        "raise ValueError(error_message) from e",
                    ),
                ],
                "ValueError: Invalid repository ID or local directory specified: "
                f"'{ns.model}'.\nPlease verify the following requirements:\n"
                "1. Provide a valid Hugging Face repository ID.\n"
                "2. Specify a local directory that contains a recognized configuration file.\n"
                "   - For Hugging Face models: ensure the presence of a 'config.json'.\n"
                "   - For Mistral models: ensure the presence of a 'params.json'.\n"
                "3. For GGUF: pass the local path of the GGUF checkpoint.\n"
                "   Loading GGUF from a remote repo directly is not yet supported.\n",
                cause,
            ) from None
        if (
            config.get("auto_map")
            and str(config.get("model_type")) not in TRANSFORMERS_MODEL_TYPES
            and not ns.trust_remote_code
        ):
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES,
                    frame("config/model.py", 611, "__post_init__", "hf_config = get_config("),
                    frame(
                        "transformers/dynamic_module_utils.py",
                        745,
                        "resolve_trust_remote_code",
                        "raise ValueError(",
                    ),
                ],
                f"ValueError: The repository for {ns.model} contains custom code which must be executed to correctly "
                f"load the model. You can inspect the repository content at https://hf.co/{ns.model}.\n"
                "Please pass the argument `trust_remote_code=True` to allow custom code to be run.",
            )
        return facts(
            ns.model, config, index, dtype_arg=ns.dtype or "auto", quantization=ns.quantization
        ), config

    def _engine_fail(
        self, where: str, msg: str | None, frames: list, exc_line: str, proc: str = "EngineCore"
    ) -> Exit:
        """The engine core died while starting: its traceback, then the API server's RuntimeError."""
        if msg:
            _log.error(where, msg, proc)
        _log.log_traceback(
            "core.py:1108",
            "EngineCore failed to start.",
            [
                frame(
                    "v1/engine/core.py",
                    1082,
                    "run_engine_core",
                    "engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)",
                ),
                frame(
                    "v1/engine/core.py", 125, "__init__", "self.model_executor = executor_class(vllm_config)"
                ),
                *frames,
            ],
            exc_line,
        )
        self.registration.remove()
        return _api_fail(
            [
                *_ENGINE_ARGS_FRAMES[:3],
                frame(
                    "entrypoints/launchers/api_server/entry.py",
                    127,
                    "build_async_engine_client_from_engine_args",
                    "async_llm = AsyncLLM.from_vllm_config(",
                ),
                frame("v1/engine/core_client.py", 1032, "__init__", "with launch_core_engines("),
                frame("v1/engine/utils.py", 1188, "wait_for_engine_startup", "raise RuntimeError("),
            ],
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}",
        )

    def _engine_core(self, f, config, devices, limits, tp, pp, listen):
        ns = self.ns
        world = tp * pp
        gmu = ns.gpu_memory_utilization if ns.gpu_memory_utilization is not None else 0.92
        t0 = time.monotonic()
        served = ns.served_model_name or [ns.model]
        _log.info(
            "core.py:123",
            (
                f"Initializing a V1 LLM engine (v{__version__}) with config: model='{ns.model}', "
                f"speculative_config=None, tokenizer='{ns.model}', skip_tokenizer_init=False, tokenizer_mode=auto, "
                f"revision={ns.revision}, tokenizer_revision=None, trust_remote_code={ns.trust_remote_code or False}, "
                f"dtype=torch.{f.dtype}, max_seq_len={ns.max_model_len if ns.max_model_len not in (None, -1) else f.derived_max_len}, "
                f"download_dir={ns.download_dir!r}, load_format={ns.load_format}, tensor_parallel_size={tp}, "
                f"pipeline_parallel_size={pp}, data_parallel_size={ns.data_parallel_size or 1}, "
                f"disable_custom_all_reduce=False, quantization={f.quant_method}, enforce_eager={bool(ns.enforce_eager)}, "
                f"kv_cache_dtype={ns.kv_cache_dtype}, device_config=cuda, seed=0, served_model_name={served[0]}, "
                f"enable_prefix_caching={ns.enable_prefix_caching is not False}, enable_chunked_prefill=True"
            ),
            "EngineCore",
        )
        if not devices:
            raise self._engine_fail(
                "",
                None,
                [
                    frame(
                        "v1/worker/gpu_worker.py",
                        233,
                        "init_device",
                        "torch.accelerator.set_device_index(self.device)",
                    ),
                ],
                "RuntimeError: No CUDA GPUs are available",
            )
        if self._crash_now(ns.port):
            raise self._engine_fail(
                "",
                None,
                [
                    frame("v1/executor/abstract.py", 109, "__init__", "self._init_executor()"),
                    frame(
                        "v1/worker/gpu_worker.py",
                        233,
                        "init_device",
                        "torch.accelerator.set_device_index(self.device)",
                    ),
                ],
                "RuntimeError: CUDA error: unspecified launch failure\nCUDA kernel errors might be asynchronously "
                "reported at some other API call, so the stacktrace below might be incorrect.\nFor debugging consider "
                "passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
            )
        others = gpus.others_used_mib(self.pid)
        short = fit.check_free(devices, others, gmu)
        if short:
            raise self._engine_fail(
                "",
                None,
                [
                    frame(
                        "v1/worker/gpu_worker.py",
                        260,
                        "init_device",
                        "self.requested_memory = request_memory(init_snapshot, self.cache_config)",
                    ),
                    frame("v1/worker/utils.py", 435, "request_memory", "raise ValueError("),
                ],
                f"ValueError: Free memory on device cuda:{short.rank} ({fit.gib(short.free)}/{fit.gib(short.total)} GiB) "
                f"on startup is less than desired GPU memory utilization ({gmu}, {fit.gib(short.requested)} GiB). "
                "Decrease GPU memory utilization or reduce GPU memory used by other processes.",
            )
        dp = ns.data_parallel_size or 1
        if len(devices) < world * dp:
            # Data parallel ranks each take their own GPUs; ParallelConfig does not count them.
            raise self._engine_fail(
                "",
                None,
                [
                    frame(
                        "v1/worker/gpu_worker.py",
                        233,
                        "init_device",
                        "torch.accelerator.set_device_index(self.device)",
                    )
                ],
                "torch.AcceleratorError: CUDA error: invalid device ordinal\nGPU device may be out of range, do you "
                "have enough GPUs?\nCUDA kernel errors might be asynchronously reported at some other API call, so the "
                "stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1",
            )
        procs = []
        for d in range(dp):
            for r in range(world):
                if world == 1:
                    procs.append("EngineCore" if dp == 1 else f"EngineCore_DP{d}")
                else:
                    procs.append(
                        "Worker"
                        + (f"_DP{d}" if dp > 1 else "")
                        + f"_TP{r % tp}"
                        + (f"_PP{r // tp}" if pp > 1 else "")
                    )
        w = fit.weights_per_gpu(f, tp, pp)
        self._register({d.parent_uuid: (w + fit.NON_TORCH) // MiB for d in devices})
        for proc in procs:
            _log.info("gpu_model_runner.py:4467", f"Starting to load model {ns.model}...", proc)
        oom = fit.check_weights(devices, others, f, tp, pp)
        self._sleep(self.knobs.load_seconds if not oom else self.knobs.load_seconds / 2)
        if oom:
            in_use = oom.free - oom.tried * 2 // 5
            torch_msg = (
                f"CUDA out of memory. Tried to allocate {oom.tried / MiB:.2f} MiB. GPU {oom.rank} has a total "
                f"capacity of {oom.total / GiB:.2f} GiB of which {(oom.free - in_use) / MiB:.2f} MiB is free. "
                f"Including non-PyTorch memory, this process has {in_use / GiB:.2f} GiB memory in use. Of the "
                f"allocated memory {(in_use - fit.NON_TORCH - 20 * MiB) / GiB:.2f} GiB is allocated by PyTorch, "
                "and 20.00 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is "
                "large try setting PYTORCH_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
                "documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
            )
            raise self._engine_fail(
                "gpu_model_runner.py:4818",
                "Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization to free memory "
                "for weights, increasing --tensor-parallel-size, or using --quantization. See "
                f"{CONSERVING} for more tips. (original error: {torch_msg})",
                [
                    frame(
                        "v1/worker/gpu_worker.py",
                        442,
                        "load_model",
                        "self.model_runner.load_model(load_dummy_weights=load_dummy_weights)",
                    ),
                    frame(
                        "v1/worker/gpu_model_runner.py",
                        4811,
                        "load_model",
                        "self.model = model_loader.load_model(",
                    ),
                    frame(
                        "model_executor/model_loader/base_loader.py",
                        58,
                        "load_model",
                        "self.load_weights(model, model_config)",
                    ),
                ],
                f"torch.OutOfMemoryError: {torch_msg}",
                procs[oom.rank],
            )
        load_s = self.knobs.load_seconds
        for proc in procs:
            _log.info("default_loader.py:430", f"Loading weights took {load_s:.2f} seconds", proc)
            _log.info(
                "gpu_model_runner.py:4549",
                f"Model loading took {fit.gib(w):.2f} GiB memory and {load_s + 0.1:.6f} seconds",
                proc,
            )
        kv_bytes_arg = ns.kv_cache_memory_bytes
        planned = fit.plan_kv(
            devices,
            f,
            gmu=gmu,
            tp=tp,
            pp=pp,
            max_model_len=ns.max_model_len if ns.max_model_len is not None else f.derived_max_len,
            limits=limits,
            kv_cache_dtype=ns.kv_cache_dtype or "auto",
            enforce_eager=bool(ns.enforce_eager),
            kv_cache_memory_bytes=kv_bytes_arg,
        )
        core_frames = [
            frame("v1/engine/core.py", 138, "__init__", "self._initialize_kv_caches(vllm_config)"),
            frame(
                "v1/engine/core.py", 254, "_initialize_kv_caches", "kv_cache_configs = get_kv_cache_configs("
            ),
        ]
        if isinstance(planned, fit.NoCacheMemory):
            raise self._engine_fail(
                "",
                None,
                [
                    *core_frames,
                    frame(
                        "v1/core/kv_cache_planning.py",
                        701,
                        "check_enough_kv_cache_memory",
                        "raise ValueError(",
                    ),
                ],
                "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
                "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, despite "
                f"its name). See {CONSERVING} for more details.",
            )
        if isinstance(planned, fit.MaxLenTooLarge):
            based = (
                f" Based on the available memory, the estimated maximum model length is {planned.estimated}."
                if planned.estimated > 0
                else ""
            )
            raise self._engine_fail(
                "",
                None,
                [
                    *core_frames,
                    frame(
                        "v1/core/kv_cache_planning.py",
                        731,
                        "check_enough_kv_cache_memory",
                        "raise ValueError(",
                    ),
                ],
                f"ValueError: To serve at least one request with the model's max seq len ({planned.max_model_len}), "
                f"({planned.needed / GiB:.2f} GiB KV cache is needed, which is larger than the available KV cache "
                f"memory ({planned.available / GiB:.2f} GiB).{based} Try increasing `gpu_memory_utilization` (which "
                "also controls CPU memory on the CPU backend) or decreasing `max_model_len` when initializing the "
                f"engine. See {CONSERVING} for more details.",
            )
        for proc in procs:
            _log.info(
                "gpu_worker.py:424",
                f"Available KV cache memory: {fit.gib(planned.available_kv):.2f} GiB",
                proc,
            )
        if planned.auto_reduced_from:
            _log.info(
                "kv_cache_planning.py:612",
                f"Auto-fit max_model_len: reduced from {planned.auto_reduced_from} to {planned.max_model_len} "
                "to fit in available GPU memory",
                "EngineCore",
            )
        _log.info(
            "kv_cache_utils.py:1879",
            f"GPU KV cache size: {planned.kv_tokens:,} tokens, Maximum concurrency for "
            f"{planned.max_model_len:,} tokens per request: {planned.concurrency:.2f}x",
            "EngineCore",
        )
        self._register(
            {d.parent_uuid: math.ceil(r / MiB) for d, r in zip(devices, planned.requested, strict=False)}
        )
        _log.info(
            "core.py:368",
            f"init engine (profile, create kv cache, warmup model) took {time.monotonic() - t0:.2f} seconds",
            "EngineCore",
        )
        return self._build_app(f, config, planned, served, listen), ns.shutdown_timeout or 0

    def _crash_now(self, port: int) -> bool:
        mode = self.knobs.crash_on_start
        if mode == "always":
            return True
        if mode == "once":
            marker = Path(self.knobs.crash_marker or gpus.state_dir() / f"vllm-crash-once-{port}")
            if marker.exists():
                return False
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(f"{self.pid}\n")
            except OSError:
                pass
            return True
        return False

    def _register(self, gpus_mib: dict[str, int]) -> None:
        err = self.registration.write(gpus_mib)
        if err:
            _log.warning(
                "gpu_worker.py:1", f"[pi-lab] cannot write the GPU process registry: {err}", "EngineCore"
            )

    def _build_app(self, f, config, planned, served, listen) -> App:
        ns = self.ns
        _log.info("entry.py:135", "Supported tasks: ['generate']")
        fam = family_of(ns.model, config)
        is_gpt_oss = str(config.get("model_type", "")) == "gpt_oss"
        rp = ns.reasoning_parser if ns.reasoning_parser and ns.reasoning_parser.lower() != "none" else None
        if rp and rp not in REASONING_PARSERS:
            self.registration.remove()
            registered = ", ".join(sorted(REASONING_PARSERS))
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES[:1],
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        241,
                        "run_server_worker",
                        "shutdown_task = await build_and_serve(",
                    ),
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        190,
                        "build_and_serve",
                        "await init_app_state(engine_client, app.state, args, supported_tasks)",
                    ),
                    frame(
                        "entrypoints/openai/api_server.py",
                        448,
                        "init_app_state",
                        "state.online_renderer = OnlineRenderer(",
                    ),
                    frame(
                        "reasoning/abs_reasoning_parsers.py", 281, "get_reasoning_parser", "raise KeyError("
                    ),
                ],
                f"KeyError: \"Reasoning parser '{rp}' not found. Available parsers: {registered}\"",
            )
        template = ns.chat_template
        if template and not any(c in template for c in "{}\n") and not Path(template).exists():
            self.registration.remove()
            raise _api_fail(
                [
                    *_ENGINE_ARGS_FRAMES[:1],
                    frame(
                        "entrypoints/launchers/api_server/entry.py",
                        241,
                        "run_server_worker",
                        "shutdown_task = await build_and_serve(",
                    ),
                    frame(
                        "entrypoints/openai/api_server.py",
                        338,
                        "init_app_state",
                        "resolved_chat_template = load_chat_template(args.chat_template)",
                    ),
                    frame(
                        "entrypoints/chat_utils.py",
                        1702,
                        "load_chat_template",
                        "raise ValueError(msg) from e",
                    ),
                ],
                f"ValueError: The supplied chat template string ({template}) appears path-like, but doesn't exist!",
            )
        if is_gpt_oss and not rp:
            rp = "openai_gptoss"
        if ns.enable_auto_tool_choice:
            _log.info("serving.py:197", '"auto" tool choice has been enabled.')
        kwargs = ns.default_chat_template_kwargs if isinstance(ns.default_chat_template_kwargs, dict) else {}
        keys = [k for k in (ns.api_key or [os.environ.get("VLLM_API_KEY")]) if k]
        parallel = "".join(
            f"-{n}{v}"
            for n, v in (
                ("tp", ns.tensor_parallel_size),
                ("pp", ns.pipeline_parallel_size),
                ("dp", ns.data_parallel_size),
            )
            if v and v > 1
        )
        mode = ns.fingerprint_mode or "full"
        digest = hashlib.sha256(f"{ns.model}|{planned.max_model_len}|{ns.dtype}".encode()).hexdigest()[:8]
        fp = {
            "full": f"vllm-{__version__}{parallel}-{digest}",
            "hash": f"vllm-{__version__}-{digest}",
            "custom": ns.fingerprint_value,
            "none": None,
        }.get(mode)
        cache_info = {
            "block_size": str(fit.BLOCK_SIZE),
            "cache_dtype": str(ns.kv_cache_dtype),
            "gpu_memory_utilization": str(ns.gpu_memory_utilization),
            "num_gpu_blocks": str(planned.kv_tokens // fit.BLOCK_SIZE),
            "enable_prefix_caching": str(ns.enable_prefix_caching is not False),
        }
        quiet = frozenset(
            p.strip() for p in (ns.disable_access_log_for_endpoints or "").split(",") if p.strip()
        )
        return App(
            served_names=list(served),
            model_path=ns.model,
            max_model_len=planned.max_model_len,
            family=fam,
            auto_tools=bool(ns.enable_auto_tool_choice),
            tool_parser=ns.tool_call_parser,
            reasoning_parser=rp,
            is_gpt_oss=is_gpt_oss,
            template_kwargs=dict(kwargs),
            api_keys=keys,
            stats=Stats(served[0], planned.max_model_len, cache_info),
            fingerprint=fp,
            stream_delay=self.knobs.stream_delay,
            fail_requests=self.knobs.fail_requests,
            access_log=not ns.disable_uvicorn_access_log,
            quiet_paths=quiet,
        )

    # -- serving --------------------------------------------------------------------------------
    def _serve(self, sock: socket.socket, app: App, listen: str, shutdown_timeout: int) -> int:
        _log.info("entry.py:139", f"Starting vLLM server on {listen}")
        _log.info("launcher.py:61", "Available routes are:")
        for path, methods in ROUTES:
            _log.info("launcher.py:70", f"Route: {path}, Methods: {methods}")
        server = Server(sock, app)
        server.server_activate()
        _log.uvicorn(f"Started server process [{self.pid}]")
        _log.uvicorn("Waiting for application startup.")
        self.serving = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        _log.uvicorn("Application startup complete.")
        if self.signal_name:
            self.stop.set()
        started = time.monotonic()
        last_stats = started
        crash_at = started + self.knobs.crash_after if self.knobs.crash_after is not None else None
        while not self.stop.wait(0.1):
            now = time.monotonic()
            if crash_at is not None and now >= crash_at:
                return self._die(server, app)
            if not self.ns.disable_log_stats and now - last_stats >= 10.0:
                line = app.stats.throughput_line(now - last_stats)
                last_stats = now
                if line:
                    _log.info("loggers.py:271", line)
        return self._shutdown(server, shutdown_timeout)

    def _shutdown(self, server: Server, timeout: int) -> int:
        _log.info("launcher.py:152", "[shutdown] API server: shutdown triggered")
        mode = "drain" if timeout > 0 else "abort"
        _log.info(
            "launcher.py:168", f"[shutdown] API server: stopping engine client mode={mode} timeout={timeout}s"
        )
        _log.info(
            "core.py:1201",
            f"[shutdown] EngineCore: trigger received signal={self.signal_name or 'SIGTERM'}",
            "EngineCore",
        )
        if timeout > 0:
            deadline = time.monotonic() + timeout
            while server.active > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        _log.uvicorn("Shutting down")
        server.shutdown()
        server.server_close()
        _log.uvicorn("Waiting for application shutdown.")
        _log.uvicorn("Application shutdown complete.")
        self.registration.remove()
        _log.uvicorn(f"Finished server process [{self.pid}]")
        return 0

    def _die(self, server: Server, app: App) -> int:
        app.dead = True
        _log.log_traceback(
            "core.py:1131",
            "EngineCore encountered a fatal error.",
            [
                frame("v1/engine/core.py", 1122, "run_engine_core", "engine_core.run_busy_loop()"),
                frame("v1/engine/core.py", 1163, "run_busy_loop", "self._process_engine_step()"),
                frame(
                    "v1/engine/core.py",
                    1196,
                    "_process_engine_step",
                    "outputs, model_executed = self.step_fn()",
                ),
            ],
            "RuntimeError: CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
            "asynchronously reported at some other API call, so the stacktrace below might be incorrect.\n"
            "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
            "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
        )
        self.registration.remove()
        _log.error(
            "async_llm.py:548",
            "AsyncLLM output_handler failed.\n"
            + _log.format_traceback(
                [
                    frame(
                        "v1/engine/async_llm.py",
                        501,
                        "output_handler",
                        "outputs = await engine_core.get_output_async()",
                    ),
                    frame(
                        "v1/engine/core_client.py",
                        894,
                        "get_output_async",
                        "raise self._format_exception(outputs) from None",
                    ),
                ],
                "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for "
                "the root cause.",
            ),
        )
        time.sleep(0.2)
        _log.uvicorn("Shutting down")
        server.shutdown()
        server.server_close()
        _log.uvicorn("Waiting for application shutdown.")
        _log.uvicorn("Application shutdown complete.")
        _log.uvicorn(f"Finished server process [{self.pid}]")
        return 1


# Model types transformers itself implements: other configs with an `auto_map` need --trust-remote-code.
TRANSFORMERS_MODEL_TYPES = frozenset(
    {
        "llama",
        "llama4",
        "llama4_text",
        "mistral",
        "mistral3",
        "mixtral",
        "ministral",
        "qwen2",
        "qwen2_moe",
        "qwen2_vl",
        "qwen2_5_vl",
        "qwen3",
        "qwen3_moe",
        "qwen3_next",
        "qwen3_vl",
        "qwen3_vl_moe",
        "qwen3_5",
        "qwen3_5_moe",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "gemma3n",
        "glm",
        "glm4",
        "glm4_moe",
        "glm4v",
        "gpt_oss",
        "deepseek_v2",
        "deepseek_v3",
        "phi",
        "phi3",
        "phimoe",
        "granite",
        "granitemoe",
        "granitemoehybrid",
        "olmo",
        "olmo2",
        "olmo3",
        "falcon",
        "falcon_h1",
        "gpt2",
        "gpt_neox",
        "gptj",
        "opt",
        "bloom",
        "starcoder2",
        "cohere",
        "cohere2",
        "dbrx",
        "jamba",
        "mamba",
        "mamba2",
        "nemotron",
        "exaone4",
        "hunyuan_v1_dense",
        "hunyuan_v1_moe",
        "seed_oss",
        "smollm3",
        "ernie4_5",
        "ernie4_5_moe",
        "minimax",
        "arcee",
        "apertus",
        "lfm2",
        "bitnet",
        "helium",
    }
)

# The VLLM_* variables vLLM 0.33 knows that a deployment is likely to set (anything else warns).
_KNOWN_ENVS = frozenset(
    {
        "VLLM_API_KEY",
        "VLLM_NO_USAGE_STATS",
        "VLLM_DO_NOT_TRACK",
        "VLLM_LOGGING_LEVEL",
        "VLLM_CONFIGURE_LOGGING",
        "VLLM_LOGGING_CONFIG_PATH",
        "VLLM_LOGGING_STREAM",
        "VLLM_ENGINE_READY_TIMEOUT_S",
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE",
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN",
        "VLLM_WORKER_MULTIPROC_METHOD",
        "VLLM_HOST_IP",
        "VLLM_PORT",
        "VLLM_CACHE_ROOT",
        "VLLM_CONFIG_ROOT",
        "VLLM_DISABLE_LOG_LOGO",
        "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS",
        "VLLM_TARGET_DEVICE",
        "VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS",
        "VLLM_PROCESS_NAME_PREFIX",
        "VLLM_ENABLE_RESPONSES_API_STORE",
        "VLLM_SERVER_DEV_MODE",
        "VLLM_DEBUG_LOG_API_SERVER_RESPONSE",
        "VLLM_USE_MODELSCOPE",
        "VLLM_ATTENTION_BACKEND",
        "VLLM_USE_FLASHINFER_SAMPLER",
        "VLLM_FLASHINFER_MOE_BACKEND",
        "VLLM_USE_DEEP_GEMM",
        "VLLM_RPC_TIMEOUT",
        "VLLM_LOG_STATS_INTERVAL",
        "VLLM_XLA_USE_SPMD",
        "VLLM_DP_SIZE",
        "VLLM_DP_RANK",
        "VLLM_DP_MASTER_IP",
        "VLLM_DP_MASTER_PORT",
        "VLLM_MAIN_CUDA_VERSION",
        "VLLM_USE_RUST_FRONTEND",
        "VLLM_REQUEST_BODY_LOG_LEVEL",
    }
)


def main(ns) -> None:
    code = ServeCommand(ns).run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code) if threading.active_count() > 1 else sys.exit(code)
