"""`/metrics`: vLLM 0.33's Prometheus names (`v1/metrics/loggers.py`), counting real requests.

Labels are `model_name` (the first served name) and `engine`, in that order, as prometheus_client
prints them; counters carry `_total` in HELP/TYPE, as its text exposition does.
"""

from __future__ import annotations

import threading

TTFT_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]
LATENCY_BUCKETS = [
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
]
FINISH_REASONS = ["stop", "length", "abort", "error", "repetition"]


def _1_2_5(limit: int) -> list[float]:
    out, exp = [], 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > limit:
                return out
            out.append(float(v))
        exp += 1


class Histogram:
    def __init__(self, buckets: list[float]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += v


def _f(v) -> str:
    return repr(float(v))


class Stats:
    def __init__(self, model_name: str, max_model_len: int, cache_info: dict[str, str]):
        self.lock = threading.Lock()
        self.model_name = model_name
        self.cache_info = cache_info
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success = dict.fromkeys(FINISH_REASONS, 0)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(LATENCY_BUCKETS)
        self.req_prompt = Histogram(_1_2_5(max_model_len))
        self.req_gen = Histogram(_1_2_5(max_model_len))
        self.logged_prompt = 0
        self.logged_gen = 0

    def start(self) -> None:
        with self.lock:
            self.running += 1

    def finish(self, prompt: int, gen: int, reason: str, ttft: float, e2e: float) -> None:
        with self.lock:
            self.running = max(0, self.running - 1)
            self.prompt_tokens += prompt
            self.generation_tokens += gen
            self.success[reason if reason in self.success else "stop"] += 1
            self.ttft.observe(ttft)
            self.e2e.observe(e2e)
            self.req_prompt.observe(prompt)
            self.req_gen.observe(gen)

    def abort(self) -> None:
        with self.lock:
            self.running = max(0, self.running - 1)
            self.success["abort"] += 1

    def render(self) -> str:
        labels = f'model_name="{self.model_name}",engine="0"'
        out: list[str] = []

        def metric(name, kind, help_text, samples):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)

        def hist(name, help_text, h: Histogram):
            samples = [
                f'{name}_bucket{{{labels},le="{b}"}} {_f(c)}'
                for b, c in zip(h.buckets, h.counts, strict=False)
            ]
            samples.append(f'{name}_bucket{{{labels},le="+Inf"}} {_f(h.total)}')
            samples.append(f"{name}_count{{{labels}}} {_f(h.total)}")
            samples.append(f"{name}_sum{{{labels}}} {_f(h.sum)}")
            metric(name, "histogram", help_text, samples)

        with self.lock:
            usage = min(1.0, self.running * 0.001)
            metric(
                "vllm:num_requests_running",
                "gauge",
                "Number of requests in model execution batches.",
                [f"vllm:num_requests_running{{{labels}}} {_f(self.running)}"],
            )
            metric(
                "vllm:num_requests_waiting",
                "gauge",
                "Number of requests waiting to be processed.",
                [f"vllm:num_requests_waiting{{{labels}}} 0.0"],
            )
            metric(
                "vllm:engine_sleep_state",
                "gauge",
                "Engine sleep state; awake = 0 means engine is sleeping; "
                "awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; "
                "discard_all = 1 means sleep level 2.",
                [
                    f'vllm:engine_sleep_state{{{labels},sleep_state="awake"}} 1.0',
                    f'vllm:engine_sleep_state{{{labels},sleep_state="weights_offloaded"}} 0.0',
                    f'vllm:engine_sleep_state{{{labels},sleep_state="discard_all"}} 0.0',
                ],
            )
            metric(
                "vllm:kv_cache_usage_perc",
                "gauge",
                "KV-cache usage. 1 means 100 percent usage.",
                [f"vllm:kv_cache_usage_perc{{{labels}}} {_f(usage)}"],
            )
            metric(
                "vllm:prefix_cache_queries_total",
                "counter",
                "Prefix cache queries, in terms of number of queried tokens.",
                [f"vllm:prefix_cache_queries_total{{{labels}}} {_f(self.prompt_tokens)}"],
            )
            metric(
                "vllm:prefix_cache_hits_total",
                "counter",
                "Prefix cache hits, in terms of number of cached tokens.",
                [f"vllm:prefix_cache_hits_total{{{labels}}} 0.0"],
            )
            metric(
                "vllm:num_preemptions_total",
                "counter",
                "Cumulative number of preemption from the engine.",
                [f"vllm:num_preemptions_total{{{labels}}} 0.0"],
            )
            metric(
                "vllm:prompt_tokens_total",
                "counter",
                "Number of prefill tokens processed.",
                [f"vllm:prompt_tokens_total{{{labels}}} {_f(self.prompt_tokens)}"],
            )
            metric(
                "vllm:generation_tokens_total",
                "counter",
                "Number of generation tokens processed.",
                [f"vllm:generation_tokens_total{{{labels}}} {_f(self.generation_tokens)}"],
            )
            metric(
                "vllm:request_success_total",
                "counter",
                "Count of successfully processed requests.",
                [
                    f'vllm:request_success_total{{{labels},finished_reason="{r}"}} {_f(n)}'
                    for r, n in self.success.items()
                ],
            )
            hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", self.req_prompt)
            hist("vllm:request_generation_tokens", "Number of generation tokens processed.", self.req_gen)
            hist(
                "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", self.ttft
            )
            hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", self.e2e)
            info = ",".join(f'{k}="{v}"' for k, v in sorted(self.cache_info.items()))
            metric(
                "vllm:cache_config_info",
                "gauge",
                "Information of the LLMEngine CacheConfig",
                [f"vllm:cache_config_info{{{info}}} 1.0"],
            )
        return "\n".join(out) + "\n"

    def throughput_line(self, interval: float) -> str | None:
        """The periodic `Engine 000: Avg prompt throughput …` line, only when something happened."""
        with self.lock:
            dp = self.prompt_tokens - self.logged_prompt
            dg = self.generation_tokens - self.logged_gen
            self.logged_prompt, self.logged_gen = self.prompt_tokens, self.generation_tokens
            running = self.running
        if not dp and not dg and not running:
            return None
        return (
            f"Engine 000: Avg prompt throughput: {dp / interval:.1f} tokens/s, Avg generation throughput: "
            f"{dg / interval:.1f} tokens/s, Running: {running} reqs, Waiting: 0 reqs, "
            f"GPU KV cache usage: {min(100.0, running * 0.1):.1f}%, Prefix cache hit rate: 0.0%"
        )
