"""Prometheus metrics of the server: labelled by route template (bounded series), 500s included."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "asrflow_requests_total", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.errors = Counter("asrflow_errors_total", "Failed requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "asrflow_request_seconds",
            "Request latency",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )
        self.audio = Counter("asrflow_audio_seconds_total", "Audio seconds transcribed", registry=self.registry)
        # one series per model that answered (names that resolved to a loaded model: bounded by the registry)
        self.model_requests = Counter(
            "asrflow_model_requests_total", "Requests answered per model", ["model", "version"], registry=self.registry
        )
        self.model_loads = Counter("asrflow_model_loads_total", "Models loaded", ["model"], registry=self.registry)
        self.turns = Histogram(
            "asrflow_model_turn_seconds",
            "The model thread's turns (a window each) and their time",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.queue = Gauge("asrflow_queue_depth", "Requests waiting for the model", registry=self.registry)
        self.admitted = Gauge(
            "asrflow_admitted_audio_seconds", "Audio admitted and not yet answered", registry=self.registry
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, status).inc()
        if status >= 400:
            self.errors.labels(endpoint, status).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
