"""Request ids (on every response and every log line) and Prometheus metrics."""

from __future__ import annotations

import contextvars
import logging
import os
import random
import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from customer_metrics.api_keys.secrets import is_well_formed, redact_keys

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def choose_request_id(sent: str | None) -> str:
    """The caller's id when it is sane (short, printable, no spaces, not an API key: the id is
    echoed and goes into every log line); else a new one."""
    if sent and _SANE_ID.fullmatch(sent) and not is_well_formed(sent):
        return sent
    # 128 random bits as 32 hex digits, like a UUID's; an id needs no cryptographic source
    # (a UUID from os.urandom cost a system call and 2 % of a request's CPU).
    return f"{_ids.getrandbits(128):032x}"


_ids = random.Random()  # noqa: S311 - ids, not secrets; seeded from the OS per process


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RedactingFormatter(logging.Formatter):
    """Another formatter's lines with any API key cut down to its prefix: a key sent where it
    does not belong (a query string, which uvicorn logs at trace level; an exception message)
    never reaches a log."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_keys(self.inner.format(record))


LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"
# uvicorn configures these before the app is created; their lines are redacted too.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.access")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(RedactingFormatter(logging.Formatter(LOG_FORMAT)))
    root = logging.getLogger("customer_metrics")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in _SERVER_LOGGERS:
        for server_handler in logging.getLogger(name).handlers:
            if not isinstance(server_handler.formatter, RedactingFormatter):
                inner = server_handler.formatter or logging.Formatter()
                server_handler.setFormatter(RedactingFormatter(inner))


class Metrics:
    """One registry per app, so several apps in one process (the tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cm_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cm_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.ingested = Counter(
            "cm_values_ingested",
            "Metric values stored, by path (single or batch).",
            ["path"],
            registry=self.registry,
        )

        # Each series' child, found once: `labels()` takes a lock and builds a key on every
        # call, and every request records two series.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.ingested_single = self.ingested.labels("single")

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request: counted by route template, method and status; timed."""
        children = self._children.get((route, method, status))
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
            if len(self._children) < 4096:  # methods are the client's to choose: bounded
                self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        """This process's metrics; with `serve --workers N`, every worker's, added up."""
        if os.environ.get(MULTIPROCESS_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
