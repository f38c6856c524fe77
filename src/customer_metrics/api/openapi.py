"""What the OpenAPI document says beyond each route's own models: the error bodies a route can
answer with, operation ids and the links between operations, and how requests authenticate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    """Every error other than a 422 (contract §0)."""

    detail: str = Field(examples=["No metric 'arr' in this organization."])
    code: str = Field(examples=["not_found"])


_DESCRIPTIONS = {
    401: "Missing, malformed, unknown or revoked API key (`unauthorized`).",
    404: "No such object in this organization (`not_found`).",
    409: (
        "Conflicts with the stored state (`name_taken`, `key_taken`, `metric_in_use`, "
        "`metric_archived`, `customer_exists`), or the request's Idempotency-Key is still "
        "in use (`idempotency_in_progress`)."
    ),
    413: "The request body is over the limit (`payload_too_large`).",
    415: "The body was not sent as JSON (`unsupported_media_type`).",
    429: (
        "Over the API key's rate limit (`rate_limited`, with `Retry-After`, `RateLimit` and "
        "`RateLimit-Policy`); nothing was done."
    ),
    503: (
        "No database connection could be had, or the server is shedding load "
        "(`unavailable`, with `Retry-After`); retry."
    ),
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {
        "Retry-After": {"schema": {"type": "string"}},
        "RateLimit": {"schema": {"type": "string"}},
        "RateLimit-Policy": {"schema": {"type": "string"}},
    },
    503: {"Retry-After": {"schema": {"type": "string"}}},
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer these statuses in the `{detail, code}` shape."""
    return {
        status: {"model": ErrorOut, "description": _DESCRIPTIONS[status]}
        | ({"headers": _HEADERS[status]} if status in _HEADERS else {})
        for status in statuses
    }


# Every route under the base path: it authenticates (and is rate limited per key), takes a
# body limit, can be shed under load, and needs the database.
EVERY_API_ROUTE = errors(401, 413, 429, 503)


def operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names (`create_metric`): stable, and what links
    name."""
    return route.name


def links(status: int, parameters: dict[str, str], *operations: str) -> dict[int | str, Any]:
    """`responses=` entry: what this response returns can be fed to these operations (OpenAPI
    links, which clients and stateful testers follow: create -> get -> patch -> delete)."""
    return {
        status: {
            "links": {name: {"operationId": name, "parameters": parameters} for name in operations}
        }
    }


METRIC_REF = {"ref": "$response.body#/metric_id"}
CUSTOMER_REF = {"customer_id": "$response.body#/customer_id"}

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`cm_` + 40 characters."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: the first completed (2xx) response to this key and body is stored "
        "(24 h by default) and replayed with `Idempotent-Replayed: true`; the same key with "
        "another body is 422 idempotency_conflict, and while the first request runs, 409 "
        "idempotency_in_progress. Per organization."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
}


def declare_security(app: FastAPI, prefix: str) -> None:
    """Every operation under `prefix` takes an API key, as a Bearer token or in X-API-Key. The
    key is read by a dependency of our own (one header lookup, no security classes), so the
    document is told here."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI builds it once and keeps it
        components = document.setdefault("components", {})
        if "securitySchemes" not in components:
            components["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in document["paths"].items():
                if path.startswith(prefix):
                    for method, operation in operations.items():
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                        if method in ("post", "patch", "delete") and not path.endswith("/search"):
                            parameters = operation.setdefault("parameters", [])
                            parameters.append(IDEMPOTENCY_KEY_PARAMETER)
                            _admit_idempotency_conflict(operation)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_OUT = {"$ref": "#/components/schemas/ErrorOut"}


def _admit_idempotency_conflict(operation: dict[str, Any]) -> None:
    """A 422 of an operation that takes an Idempotency-Key is either the route's own (FastAPI's
    validation shape) or `idempotency_conflict` in the `{detail, code}` shape (contract §4)."""
    response = operation.get("responses", {}).get("422")
    if response is None:
        return
    content = response.get("content", {}).get("application/json", {})
    if "schema" in content:  # (a 422 documented without one admits any body already)
        content["schema"] = {"anyOf": [content["schema"], _ERROR_OUT]}
    conflict = "the Idempotency-Key was used with another request (`idempotency_conflict`)"
    response["description"] = f"{response.get('description') or 'Invalid request'}; or {conflict}."
