"""The route class every API route uses: JSON bodies only (415 otherwise), parsed strictly,
and always a JSON object; each query parameter given at most once."""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from functools import lru_cache
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from customer_metrics.api import json as strict_json
from customer_metrics.api.deps import (
    RECHECK_STATE,
    SESSION_STATE,
    TENANT_ENTERED_STATE,
    confirm_remembered_key,
)
from customer_metrics.api_keys.service import UNAUTHENTICATED_DETAIL
from customer_metrics.errors import StaleLookup, Unauthenticated, UnsupportedMediaType


@lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json.loads(await self.body())
        return self._json


async def require_object(request: StrictJSONRequest) -> None:
    """Every request body of this API is a JSON object. FastAPI validates bodies with
    `from_attributes`, so a bare fraction (parsed as a Decimal, an object with attributes)
    would otherwise pass as a model whose fields are all optional."""
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return  # FastAPI parses it again and answers 422 json_invalid
    if not isinstance(body, dict):
        raise RequestValidationError(
            [
                {
                    "type": "dict_type",
                    "loc": ("body",),
                    "msg": "Input should be a JSON object",
                    "input": body,
                }
            ]
        )


def require_single_query_values(request: Request) -> None:
    """No parameter of this API takes a list, and `?limit=1&limit=200` is ambiguous (FastAPI
    would take the last): a repeated query parameter is refused, as a repeated JSON key is."""
    if not request.scope.get("query_string"):
        return  # most requests have none: parse nothing
    params = request.query_params
    if len(params.multi_items()) != len(params):
        repeated = next(name for name in params if len(params.getlist(name)) > 1)
        raise RequestValidationError(
            [
                {
                    "type": "duplicate_parameter",
                    "loc": ("query", repeated),
                    "msg": "Query parameter given more than once",
                }
            ]
        )


class StrictRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if getattr(self.endpoint, "hot", False):
            handler = _with_exit_stacks(handler)
            handler = _direct_handler(self, handler) or handler
        takes_body = self.body_field is not None
        # Starlette anchors a route's pattern with `$`, which also matches just before a final
        # newline: `/customers/metrics%0A` would reach the metric list, not the customer
        # `metrics\n` (no such customer). A route whose path ends in a fixed word never names
        # a path ending in a newline; one ending in a parameter matches it whole already.
        fixed_end = not self.path.endswith("}")

        async def strict_handler(request: Request) -> Response:
            if fixed_end and request.scope["path"].endswith("\n"):
                raise StarletteHTTPException(404)
            require_single_query_values(request)
            strict = StrictJSONRequest(request.scope, request.receive)
            if takes_body:
                body = await request.body()
                content_type = request.headers.get("content-type")
                if body and not (content_type and _is_json(content_type)):
                    raise UnsupportedMediaType(
                        "Send the body as JSON with 'Content-Type: application/json'."
                    )
                strict._body = body
                if body:
                    await require_object(strict)
            state = strict.state._state
            try:
                try:
                    return await _answer(handler, strict)
                except StaleLookup:
                    # What the worker remembered (a key, a metric) no longer holds, and nothing
                    # was stored: run the request again with every lookup made in the database.
                    assert not state.get(RECHECK_STATE), "a re-run remembers nothing"
                    await _close_session(strict)
                    state.pop("tenant", None)
                    state.pop(TENANT_ENTERED_STATE, None)
                    state[RECHECK_STATE] = True
                    return await _answer(handler, strict)
            except Exception:
                # An error answer on the strength of a remembered key is given only once the
                # key is confirmed: a revoked key gets its 401. (Nothing is run again: the
                # request may have committed before it failed.)
                await _close_session(strict)
                if not await confirm_remembered_key(strict):
                    raise Unauthenticated(UNAUTHENTICATED_DETAIL) from None
                raise
            finally:
                await _close_session(strict)

        return strict_handler


async def _answer(
    handler: Callable[[Request], Coroutine[Any, Any, Response]], request: Request
) -> Response:
    try:
        response = await handler(request)
    except BaseException:
        claim = getattr(request.state, "idempotency", None)
        if claim is not None:
            await claim.abandon()
        raise
    claim = getattr(request.state, "idempotency", None)
    if claim is not None:
        await claim.finish(response)
    return response


async def _close_session(request: Request) -> None:
    session = request.state._state.pop(SESSION_STATE, None)
    if session is not None:
        await session.close()


Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# The exit stacks FastAPI's own handler requires in the scope: its middleware's (form files)
# and its request wrapper's (dependencies with `yield`).
_EXIT_STACKS = ("fastapi_middleware_astack", "fastapi_inner_astack", "fastapi_function_astack")


def _with_exit_stacks(fastapi_handler: Handler) -> Handler:
    """A hot request (api/hot.py) runs without FastAPI's middleware and request wrapper,
    which open the exit stacks its handler requires: they are opened here, only when
    FastAPI's handler runs (not in the common case `_direct_handler` takes). One stack
    serves all three: nothing of this API registers on them (no form files, no dependency
    with `yield`)."""

    async def handler(request: Request) -> Response:
        if _EXIT_STACKS[1] in request.scope:
            return await fastapi_handler(request)
        async with AsyncExitStack() as stack:
            for name in _EXIT_STACKS:
                request.scope[name] = stack
            return await fastapi_handler(request)

    return handler


def _direct_handler(route: APIRoute, fastapi_handler: Handler) -> Handler | None:
    """For a hot route (api/hot.py): its arguments validated by FastAPI's own fields, but
    without resolving the dependency graph for every request (about a tenth of such a
    request's CPU). Only the common case is taken: no query string, a JSON body that
    validates, dependencies that take only the request and are not overridden. Anything else
    (an invalid argument included) goes to FastAPI's handler before anything has run, so
    it answers, in FastAPI's order (dependencies, then validation errors), as it always
    does. None when the route's shape is not one this handles."""
    dependant = route.dependant
    if (
        dependant.header_params
        or dependant.cookie_params
        or len(dependant.body_params) > 1
        or (
            route.body_field is not None
            and all(route.body_field is not f for f in dependant.body_params)
        )
        or any(f.field_info.default_factory for f in dependant.query_params)
        or any(f.field_info.is_required() for f in dependant.query_params)
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or not inspect.iscoroutinefunction(dependant.call)
    ):
        return None
    takes_request: list[tuple[str, Callable[[Request], Coroutine[Any, Any, Any]]]] = []
    if len({id(sub.call) for sub in dependant.dependencies}) < len(dependant.dependencies):
        return None  # FastAPI runs a dependency named twice once: not handled here
    for sub in dependant.dependencies:
        only_request = sub.request_param_name and not (
            sub.path_params
            or sub.query_params
            or sub.header_params
            or sub.cookie_params
            or sub.body_params
            or sub.dependencies
        )
        if not (only_request and sub.name and inspect.iscoroutinefunction(sub.call)):
            return None
        takes_request.append((sub.name, sub.call))
    path_fields = [(f.name, f.alias, f) for f in dependant.path_params]
    defaults = {
        f.name: f.field_info.get_default(call_default_factory=True) for f in dependant.query_params
    }
    body_field = route.body_field
    request_name = dependant.request_param_name
    endpoint = dependant.call

    async def direct(request: Request) -> Response:
        if request.scope.get("query_string") or request.app.dependency_overrides:
            return await fastapi_handler(request)
        values: dict[str, Any] = {}
        path_params = request.path_params
        for name, alias, field in path_fields:
            value, errors = field.validate(path_params.get(alias), values, loc=("path", alias))
            if errors:
                return await fastapi_handler(request)
            values[name] = value
        values.update(defaults)
        if body_field is not None:
            if not await request.body():
                return await fastapi_handler(request)
            try:
                body = await request.json()
            except json.JSONDecodeError:
                return await fastapi_handler(request)
            value, errors = body_field.validate(body, values, loc=("body",))
            if errors:
                return await fastapi_handler(request)
            values[body_field.name] = value
        for name, call in takes_request:
            values[name] = await call(request)
        if request_name:
            values[request_name] = request
        response = await endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"hot route {route.path} must return a Response")
        return response

    return direct
