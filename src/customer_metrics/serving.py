"""Running the app under uvicorn, in one process or as a supervisor of worker processes; on
SIGTERM both stop listening at once and let the requests in flight finish."""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from customer_metrics.settings import Settings

APP = "customer_metrics.main:create_app"


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that it closes its copy of the listening socket as
    soon as it is told to stop.

    The workers share the supervisor's socket. Each closes its own copy when it starts to
    drain, but uvicorn's supervisor kept its copy open until the last worker had exited: the
    kernel went on completing handshakes that no process would accept, so a client connecting
    during the drain hung until it ended and then got a reset, instead of being refused at
    once (and sent elsewhere by its load balancer)."""

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()


def run(settings: Settings, host: str, port: int, workers: int) -> None:
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "log_level": settings.log_level,
        # Our middleware logs each request with its X-Request-ID (at debug level); uvicorn's
        # access log cannot carry it and costs a write per request.
        "access_log": False,
        # No header names the server software. (X-Forwarded-* from a proxy on this host are
        # still read: the router's redirect for a trailing slash is absolute, in the scheme.)
        "server_header": False,
        # On SIGTERM, requests in flight get this long to finish; then they are cancelled
        # (rolled back, never answered) and the process exits.
        "timeout_graceful_shutdown": settings.shutdown_timeout_seconds,
        # The supervisor of --workers N replaces a worker that misses its health check; a
        # worker starting up (imports) or deep in a 10k-item batch on a busy machine can take
        # longer than uvicorn's 5 s default, and replacing it would cut its requests.
        "timeout_worker_healthcheck": 30,
    }
    if workers == 1:
        uvicorn.run(APP, **options)
        return
    config = uvicorn.Config(APP, workers=workers, **options)
    _Supervisor(config, sockets=[config.bind_socket()]).run()
