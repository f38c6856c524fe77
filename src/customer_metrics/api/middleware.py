"""The outermost layer of every request: request id, metrics, deprecation headers for the
seed's doubled path, load shedding, the body limit, and the last-resort 500 (with no trace,
SQL or input in it)."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from customer_metrics.api.observability import Metrics, choose_request_id, request_id_var
from customer_metrics.api.ratelimit import HEADERS_SCOPE_KEY
from customer_metrics.errors import PayloadTooLarge
from customer_metrics.storage.database import is_connection_lost

log = logging.getLogger("customer_metrics.http")

API_PREFIX = "/external/v1"
DOUBLED_PREFIX = API_PREFIX + API_PREFIX
_INTERNAL_ERROR = json.dumps({"detail": "Internal server error", "code": "internal_error"})
_UNAVAILABLE = json.dumps(
    {"detail": "The database connection was lost; retry shortly.", "code": "unavailable"}
)
_RETRY = [(b"retry-after", b"1")]


def last_resort(error: Exception) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    """The answer to an error nothing else handled: 503 (retry) when the database
    connection was lost, else a bare 500 (no trace, SQL or input in it)."""
    if is_connection_lost(error):
        return 503, _UNAVAILABLE, _RETRY
    return 500, _INTERNAL_ERROR, []


class EdgeMiddleware:
    """Every request passes here first, once: request id, metrics and the last-resort
    500/503; then load shedding and the body limit. One layer for all of it: each ASGI layer
    costs every request a coroutine and a wrapped `send`.

    - Load shedding: above `max_in_flight` requests in this worker (0: no limit), a new one
      is answered 503 at once rather than queued behind the others (for a database
      connection, mostly) until clients time out. Health and metrics stay exempt: they are
      cheap, and they are how an operator sees it.
    - Body limit: 413 before parsing, at once from `Content-Length`, else as soon as the
      streamed body passes the limit. (Starlette's own limiter answers in plain text, not the
      contract's shape.)"""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, max_in_flight: int = 0
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent_id: bytes | None = None
        declared = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if sent_id is None:  # the first one sent, when there are several
                    sent_id = value
            elif name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        request_id = choose_request_id(sent_id.decode("latin-1") if sent_id else None)
        token = request_id_var.set(request_id)
        path: str = scope["path"]
        extra: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]
        if path.startswith(DOUBLED_PREFIX):
            canonical = path[len(API_PREFIX) :]
            extra += [
                (b"deprecation", b"true"),
                (b"link", f'<{canonical}>; rel="successor-version"'.encode("latin-1")),
            ]
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    *extra,
                    *scope.get(HEADERS_SCOPE_KEY, ()),  # RateLimit fields, once the key is known
                ]
            await send(message)

        try:
            shed = self.max_in_flight and self.in_flight >= self.max_in_flight
            if shed and path not in _NEVER_SHED:
                await _send_json(send_with_headers, 503, _OVERLOADED, _RETRY)
                return
            if declared is not None and declared.isdigit():
                if int(declared) > self.max_body_bytes:
                    await _send_json(send_with_headers, 413, _TOO_LARGE)
                    return
                # The server reads no more than Content-Length announces: nothing to count.
                # (With Transfer-Encoding as well, a server may frame by the chunks instead.)
                limited = receive if not chunked else self._limited(receive)
            else:
                limited = self._limited(receive)
            self.in_flight += 1
            try:
                await self.app(scope, limited, send_with_headers)
            finally:
                self.in_flight -= 1
        except Exception as error:
            if is_connection_lost(error):
                log.warning("database connection lost on %s %s: %s", scope["method"], path, error)
            else:
                log.exception("unhandled error on %s %s", scope["method"], path)
            if not response_started:  # else FastAPI's ServerErrorMiddleware answered already
                code, body, headers = last_resort(error)
                await _send_json(send_with_headers, code, body, headers)
        finally:
            elapsed = time.perf_counter() - started
            log.debug("%s %s -> %d in %.1f ms", scope["method"], path, status, elapsed * 1000)
            route = scope.get("route")
            template = getattr(route, "path_format", None) or "unmatched"
            self.metrics.observe(template, scope["method"], status, elapsed)
            request_id_var.reset(token)

    def _limited(self, receive: Receive) -> Receive:
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(TOO_LARGE_DETAIL)
            return message

        return limited_receive


_NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
_OVERLOADED = json.dumps(
    {"detail": "The server is at capacity; retry shortly.", "code": "unavailable"}
)
TOO_LARGE_DETAIL = "The request body is larger than this server accepts."
_TOO_LARGE = json.dumps({"detail": TOO_LARGE_DETAIL, "code": "payload_too_large"})


async def _send_json(
    send: Send, status: int, body: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = body.encode()
    framing = [(b"content-length", str(len(data)).encode()), (b"content-type", b"application/json")]
    await send(
        {"type": "http.response.start", "status": status, "headers": framing + (headers or [])}
    )
    await send({"type": "http.response.body", "body": data})
