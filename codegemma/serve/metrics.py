"""Prometheus metrics of one server (its own registry: no process-global state).

Counters and the latency histogram are updated by the ASGI middleware (requests) and by the
backend (tokens); engine gauges (queue length, active slots, ...) are read from
`engine.stats()` at scrape time, so they can never drift from the engine's own view.
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


class ServerMetrics:
    def __init__(self, engine_stats: Callable[[], dict], in_flight: Callable[[], int]):
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

    def observe_completion(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens.inc(max(0, prompt_tokens))
        self.completion_tokens.inc(max(0, completion_tokens))
        if cached_tokens > 0:
            self.cached_tokens.inc(cached_tokens)
            self.prefix_cache_hits.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
