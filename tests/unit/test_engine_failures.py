"""Recognising why an engine or a download failed, on the real error texts (../shared/reference/vllm-facts.md §3.8,
huggingface_hub's hf CLI)."""

import pytest

from pi_ansible.planning.engine_failures import classify, describe

REAL = [
    ("ValueError: To serve at least one request with the model's max seq len (40960), (5.62 GiB KV cache is needed, "
     "which is larger than the available KV cache memory (3.10 GiB). Based on the available memory, the estimated "
     "maximum model length is 22576. Try increasing `gpu_memory_utilization`", "context", "--context 22576"),
    ("ValueError: The model's max seq len (4096) is larger than the maximum number of tokens that can be stored in "
     "KV cache (3664). Try increasing `gpu_memory_utilization`", "context", "4096 tokens"),
    ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`",
     "no_kv_memory", "raise --memory"),
    ("ValueError: Free memory on device cuda:0 (43.0/79.6 GiB) on startup is less than desired GPU memory "
     "utilization (0.92, 73.3 GiB).", "gpu_busy", "only 43.0 of 79.6 GiB are free on cuda:0"),
    ("ERROR Failed to load model - not enough GPU memory. Try lowering --gpu-memory-utilization", "out_of_memory",
     "--gpus"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 224.00 MiB.", "out_of_memory", "FP8"),
    ("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
     "engine_init", "log lines"),
    ("OSError: [Errno 98] Address already in use", "port_in_use", "port"),
    ("RuntimeError: Failed to infer device type, please set the environment variable `VLLM_LOGGING_LEVEL=DEBUG`",
     "no_gpu", "nvidia-smi"),
    ("vllm serve: error: unrecognized arguments: --bogus 1", "bad_args", "--bogus 1"),
    ("KeyError: 'invalid tool call parser: nope (chose from { hermes })'", "tool_parser", "named nope"),
    ("Error: Model 'nobody/no-such-model' not found.\nIf the repo is private, make sure you are authenticated",
     "not_found", "check its spelling"),
    ("huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. Repository Not Found for url",
     "not_found", "does not exist"),
    ("huggingface_hub.errors.GatedRepoError: 403 Client Error. Cannot access gated repo for url", "gated",
     "request access"),
]


@pytest.mark.parametrize(("log", "kind", "advice"), REAL)
def test_real_failures_are_recognised_with_what_to_try(log, kind, advice):
    found = classify("INFO starting\n" + log + "\nINFO shutting down")
    assert found is not None and found[0] == kind, found
    assert advice in found[1]


def test_an_unknown_failure_shows_the_last_lines():
    log = "\n".join(f"line {i}" for i in range(30))
    assert classify(log) is None
    msg = describe(log, "the engine failed", tail=3)
    assert msg == "the engine failed; the last log lines:\n  line 27\n  line 28\n  line 29"
    assert describe("", "x") == "x; the last log lines:"
