"""Prometheus metrics of one server (its own registry: no process-global state).

Counters and the latency histogram are updated by the ASGI middleware (requests) and by the
backend (tokens); engine gauges (queue length, active slots, ...) are read from
`engine.stats()` at scrape time, so they can never drift from the engine's own view.

The same page carries llama.cpp's metrics under llama-server's names (`llamacpp:*`, as its
tools/server/README.md lists them), so dashboards and alerts written for llama-server work.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("codegemma.serve")

# Routes reported by name; anything else (unknown paths, scanners) is folded into "other" so a
# client cannot grow the label set without bound.
KNOWN_ENDPOINTS = frozenset({
    "/", "/health", "/v1/health", "/metrics", "/openapi.json", "/v1/completions", "/v1/chat/completions",
    "/chat/completions", "/v1/models", "/models", "/v1/fim/completions",
    "/api/generate", "/api/chat", "/api/tags", "/api/show", "/api/version", "/api/ps",
    "/infill", "/completion", "/completions", "/props", "/slots", "/tokenize", "/detokenize",
    "/apply-template", "/chat/completions/input_tokens", "/v1/chat/completions/input_tokens", "/debug/slots",
})

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# Engine counters that only grow, exported as Prometheus counters too (name: help).
ENGINE_COUNTERS = {
    "spec_draft_tokens": ("codegemma_speculative_draft_tokens", "Draft tokens proposed for verification"),
    "spec_accepted_tokens": ("codegemma_speculative_accepted_tokens",
                             "Draft tokens accepted (greedy: confirmed; sampled: by the rejection rule)"),
    "reuse_chunks": ("codegemma_cache_reuse_chunks", "Cached chunks reused at shifted positions (--cache-reuse)"),
    "reuse_tokens": ("codegemma_cache_reuse_tokens", "Prompt tokens reused from shifted chunks (--cache-reuse)"),
    "requests_failed": ("codegemma_requests_failed", "Requests the engine ended with an error"),
}


class _EngineCollector:
    """Exports every numeric value of `engine.stats()` as a gauge `codegemma_engine_<key>`, and the
    ENGINE_COUNTERS as counters."""

    def __init__(self, stats: Callable[[], dict]):
        self._stats = stats

    def collect(self):
        try:
            values = dict(self._stats())
        except Exception:  # a scrape must not fail because the engine is shutting down
            log.exception("engine.stats() failed during a metrics scrape")
            values = {}
        for key, value in sorted(values.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            yield GaugeMetricFamily(f"codegemma_engine_{key}", f"engine.stats()['{key}']", value=value)
        for key, (name, doc) in ENGINE_COUNTERS.items():
            if isinstance(values.get(key), (int, float)):
                yield CounterMetricFamily(name, doc, value=values[key])


# llama-server's metrics: (name, type, help, value from (engine stats, server totals)).
def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


LLAMACPP_METRICS = (
    ("prompt_tokens_total", "counter", "Number of prompt tokens processed.", lambda e, s: e["prefill_tokens"]),
    ("prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache.",
     lambda e, s: e["prefix_cache_tokens"] + e["reuse_tokens"]),
    ("prompt_seconds_total", "counter", "Prompt process time in seconds.", lambda e, s: s["prompt_seconds"]),
    ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.",
     lambda e, s: _ratio(e["prefill_tokens"], s["prompt_seconds"])),
    ("tokens_predicted_total", "counter", "Number of generation tokens processed.",
     lambda e, s: e["tokens_generated"]),
    ("tokens_predicted_seconds_total", "counter", "Predict process time in seconds.",
     lambda e, s: s["predict_seconds"]),
    ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.",
     lambda e, s: _ratio(s["predicted_tokens"], s["predict_seconds"])),
    ("requests_processing", "gauge", "Number of requests processing.", lambda e, s: e["active_slots"]),
    ("requests_deferred", "gauge", "Number of requests deferred.", lambda e, s: e["queue_length"]),
    ("n_tokens_max", "counter", "High watermark of the context size observed.", lambda e, s: s["n_tokens_max"]),
    ("n_decode_total", "counter", "Total number of decode steps (plain and speculative verification).",
     lambda e, s: e["decode_steps"]),
    ("n_busy_slots_per_decode", "gauge", "Average number of busy slots per decode step.",
     lambda e, s: _ratio(e["decode_rows"], e["decode_steps"])),
    ("spec_decode_num_draft_tokens_total", "counter", "Total draft tokens generated (0 when spec-decode is off).",
     lambda e, s: e["spec_draft_tokens"]),
    ("spec_decode_num_accepted_tokens_total", "counter",
     "Total draft tokens accepted by the target model (0 when spec-decode is off).",
     lambda e, s: e["spec_accepted_tokens"]),
    ("spec_decode_num_drafts_total", "counter",
     "Total speculative decoding verification steps (0 when spec-decode is off).", lambda e, s: e["spec_steps"]),
)


class ServerMetrics:
    def __init__(self, engine_stats: Callable[[], dict], in_flight: Callable[[], int]):
        self._engine_stats = engine_stats
        # totals for llama.cpp's metrics (the engine counts tokens; times come per completion)
        self._totals = {"prompt_seconds": 0.0, "predict_seconds": 0.0, "predicted_tokens": 0, "n_tokens_max": 0}
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("codegemma_http_requests", "HTTP requests by endpoint and status",
                                ("endpoint", "status"), registry=self.registry)
        self.latency = Histogram("codegemma_http_request_duration_seconds",
                                 "Time from request to the last byte of the response",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("codegemma_prompt_tokens", "Prompt tokens sent to the engine",
                                     registry=self.registry)
        self.completion_tokens = Counter("codegemma_completion_tokens", "Tokens generated",
                                         registry=self.registry)
        self.cached_tokens = Counter("codegemma_prefix_cache_hit_tokens",
                                     "Prompt tokens reused from the engine's prefix cache",
                                     registry=self.registry)
        self.prefix_cache_hits = Counter("codegemma_prefix_cache_hits",
                                         "Requests that reused at least one cached prompt token",
                                         registry=self.registry)
        self.truncated = Counter("codegemma_prompts_truncated", "Prompts cut to fit the context",
                                 registry=self.registry)
        self.rejected = Counter("codegemma_requests_rejected_queue_full",
                                "Requests answered 429 because the engine queue was full",
                                registry=self.registry)
        self.disconnects = Counter("codegemma_client_disconnects",
                                   "Requests whose client went away before the whole response was sent "
                                   "(streaming or not); their generations are cancelled",
                                   registry=self.registry)
        self.connections_dropped = Counter("codegemma_connections_dropped",
                                           "Connections closed by the server's guards, by reason (header_timeout, header_size, "
                                           "write_stall, evicted, refused); see connections.py",
                                           ("reason",), registry=self.registry)
        in_flight_gauge = Gauge("codegemma_generations_in_flight",
                                "Engine requests submitted by the server and not yet finished or cancelled",
                                registry=self.registry)
        in_flight_gauge.set_function(in_flight)
        self.registry.register(_EngineCollector(engine_stats))

    @staticmethod
    def endpoint_label(path: str) -> str:
        return path if path in KNOWN_ENDPOINTS else "other"

    def observe_request(self, path: str, status: int, started: float) -> None:
        endpoint = self.endpoint_label(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - started)

    def observe_completion(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int,
                           prompt_ms: float = 0.0, decode_ms: float = 0.0) -> None:
        self.prompt_tokens.inc(max(0, prompt_tokens))
        self.completion_tokens.inc(max(0, completion_tokens))
        if cached_tokens > 0:
            self.cached_tokens.inc(cached_tokens)
            self.prefix_cache_hits.inc()
        t = self._totals
        t["prompt_seconds"] += max(0.0, prompt_ms) / 1000.0
        t["predict_seconds"] += max(0.0, decode_ms) / 1000.0
        t["predicted_tokens"] += max(0, completion_tokens - 1)  # decode steps: the first token came with the prompt
        t["n_tokens_max"] = max(t["n_tokens_max"], prompt_tokens + completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry) + self._llamacpp()

    def _llamacpp(self) -> bytes:
        """llama-server's `llamacpp:*` metrics in Prometheus text (written out: prometheus_client
        would rename its counters, and llama.cpp's n_tokens_max is a counter without _total)."""
        try:
            stats = dict(self._engine_stats())
        except Exception:  # a scrape must not fail because the engine is shutting down
            return b""
        lines = []
        for name, kind, doc, value in LLAMACPP_METRICS:
            try:
                v = float(value(stats, self._totals))
            except KeyError:
                continue
            lines += [f"# HELP llamacpp:{name} {doc}", f"# TYPE llamacpp:{name} {kind}", f"llamacpp:{name} {v!r}"]
        return ("\n".join(lines) + "\n").encode() if lines else b""
