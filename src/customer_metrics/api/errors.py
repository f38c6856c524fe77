"""Every error response is rendered here, in the contract's shapes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from customer_metrics.api.idempotency import replay_response
from customer_metrics.api.middleware import last_resort
from customer_metrics.api_keys.secrets import redact_keys
from customer_metrics.errors import AppError, InvalidRequest, RateLimited
from customer_metrics.idempotency.service import Replay

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}
_HTTP_DETAILS = {
    404: "No such route. The API lives under /external/v1; see /docs.",
    405: "This method is not allowed on this route; see /docs.",
}


class ASCIIJSONResponse(JSONResponse):
    """Escapes non-ASCII so that even a lone surrogate echoed from the input renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


_ERROR_HEADERS = {401: {"WWW-Authenticate": "Bearer"}, 503: {"Retry-After": "1"}}


def error_body(detail: str, code: str) -> dict[str, str]:
    return {"detail": detail, "code": code}


def _scalar_input(item: dict[str, Any]) -> dict[str, Any]:
    # Echo small scalar inputs only: a 10 MiB body is not worth sending back. An API key sent
    # in a body field is not echoed either (error bodies end up in clients' logs).
    value = item.get("input")
    small = (
        value is None
        or isinstance(value, bool | int | float)
        or (isinstance(value, str) and len(value) <= 200)
    )
    if not small:
        item.pop("input", None)
    elif isinstance(value, str):
        item["input"] = redact_keys(value)
    return item


def validation_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"detail": [_scalar_input(dict(e)) for e in jsonable_encoder(errors)]}


async def _app_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    if isinstance(exc, Replay):
        return replay_response(exc.response)
    if isinstance(exc, InvalidRequest):
        item = {"type": exc.type, "loc": list(exc.loc), "msg": exc.detail}
        return ASCIIJSONResponse(validation_body([item]), status_code=422)
    headers = _ERROR_HEADERS.get(exc.status_code)
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return ASCIIJSONResponse(
        error_body(exc.detail, exc.code), status_code=exc.status_code, headers=headers
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return ASCIIJSONResponse(validation_body(list(exc.errors())), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    detail = _HTTP_DETAILS.get(exc.status_code) or str(exc.detail)
    headers = exc.headers
    if exc.status_code == 405:
        allow = request.app.state.resources.allow(request.scope["path"])
        headers = {**(headers or {}), **({"Allow": allow} if allow else {})}
    return ASCIIJSONResponse(error_body(detail, code), status_code=exc.status_code, headers=headers)


async def _last_resort(_: Request, exc: Exception) -> Response:
    # FastAPI's ServerErrorMiddleware answers with this, then raises the error on to the edge
    # middleware (outside it), which logs it.
    status, body, headers = last_resort(exc)
    response = Response(body, status_code=status, media_type="application/json")
    response.raw_headers.extend(headers)
    return response


def install(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _last_resort)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
