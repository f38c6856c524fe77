"""Domain errors. Rendered into the contract's shapes in one place: `api/errors.py`."""

from __future__ import annotations

from customer_metrics.api_keys.secrets import redact_keys


class StaleLookup(Exception):
    """Something this request took from a worker's memory instead of the database (an API key
    seen active, a metric definition) no longer holds, or a write is about to be refused on
    the strength of a remembered definition. Raised only before anything is stored: the
    route runs the request again with every lookup made in the database (api/routing.py)."""


class AppError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        # Messages quote what the caller sent (a ref, a customer id): never a key.
        self.detail = redact_keys(detail)
        super().__init__(self.detail)


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.code = code


class Unauthenticated(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(AppError):
    status_code = 503
    code = "unavailable"


class InvalidRequest(AppError):
    """A 422 raised by a service: rendered in FastAPI's validation shape."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, loc: tuple[str | int, ...], msg: str, type_: str = "value_error") -> None:
        super().__init__(msg)
        self.loc = loc
        self.type = type_
