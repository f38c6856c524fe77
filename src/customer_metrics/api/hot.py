"""The hottest routes (a value write, the agent view, a metric create) found ahead of the
router: FastAPI matches a request by walking every included router's routes, twice for the
router that holds the match (about a tenth of such a request's CPU). Here a route marked
`hot` is matched by its own regular expression, and taken only if no route the router would
try first matches the same path (one combined expression), so every request reaches the
route the router would have chosen. Anything else goes to the router as before.

The match is made just inside the edge middleware, outside FastAPI's whole stack
(`main.ServiceApp`), so a hot request also skips every layer of that stack: its error
middleware, its exception middleware (whose handlers `_serve` applies: they are put in the
scope here, as it would), its exit-stack middleware (for form files: hot routes take JSON),
the router's own call and the route's request wrapper."""

from __future__ import annotations

import inspect
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

F = TypeVar("F", bound=Callable[..., Any])


def hot(endpoint: F) -> F:
    """Marks a route to be matched ahead of the router (see the module's docstring)."""
    endpoint.hot = True  # type: ignore[attr-defined]
    return endpoint


@dataclass(frozen=True, slots=True)
class _HotRoute:
    regex: re.Pattern[str]
    earlier: re.Pattern[str] | None  # the paths a route tried before it would take
    route: APIRoute
    convertors: dict[str, Any]
    handler: Callable[[Request], Awaitable[Response]]  # the route's, as its `app` runs it


class HotRoutes:
    """Middleware around FastAPI's whole stack (`main.ServiceApp`), inside the edge: its
    `app` is that stack, whose exception middleware's handlers answer a hot route's errors,
    exactly as any other route's."""

    def __init__(
        self, app: ASGIApp, router: APIRouter, mounted: Sequence[tuple[str, APIRouter]]
    ) -> None:
        """`mounted`: the (prefix, router) pairs in the order the app included them, which is
        the order its router tries their routes in. (The app's own routes, FastAPI's
        documentation pages, are tried before them, but none lies under a hot route's path;
        the feature routers hold only APIRoutes.)"""
        self.app = app
        self._router = router
        # FastAPI's exception handlers, as its exception middleware puts them in the scope;
        # found at the first request (the stack is built then). None: not found, so every
        # request goes the router's way.
        self._handlers: tuple[Any, Any] | None = None
        self._handlers_found = False
        self._by_method: dict[str, list[_HotRoute]] = defaultdict(list)
        # FastAPI before 0.138 copies included routes into the app's router, with the prefix
        # in their path: the router then hands out the copy (its path labels the request's
        # metrics), later versions the feature router's own route.
        copies = {(r.path, r.endpoint): r for r in router.routes if isinstance(r, APIRoute)}
        tried: list[tuple[set[str], str]] = []  # (methods, path regex) in the router's order
        for prefix, feature in mounted:
            for route in feature.routes:
                if not isinstance(route, APIRoute):
                    continue
                regex, _, convertors = compile_path(prefix + route.path)
                methods = set(route.methods or ())
                # Dependencies given to the router apply only on the router's way.
                if getattr(route.endpoint, "hot", False) and not feature.dependencies:
                    taken = copies.get((prefix + route.path, route.endpoint), route)
                    for method in methods:
                        before = [p for m, p in tried if method in m]
                        self._by_method[method].append(
                            _HotRoute(
                                regex,
                                _combined(before),
                                taken,
                                convertors,
                                taken.get_route_handler(),
                            )
                        )
                tried.append((methods, regex.pattern))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Dependency overrides (the command line's local import sets one) are the app's: the
        # feature router's own route knows nothing of them, so the router serves meanwhile.
        if (
            scope["type"] == "http"
            and not scope.get("root_path")
            and not scope["app"].dependency_overrides
        ):
            path = scope["path"]
            if not self._handlers_found:
                self._handlers = _exception_handlers(self.app)
                self._handlers_found = True
            handlers = self._handlers
            candidates = self._by_method.get(scope["method"], ()) if handlers else ()
            for hot_route in candidates:
                match = hot_route.regex.match(path)
                if match is None:
                    continue
                if hot_route.earlier is not None and hot_route.earlier.match(path):
                    break  # the router would take an earlier route: let it
                params = dict(scope.get("path_params") or {})
                for name, value in match.groupdict().items():
                    params[name] = hot_route.convertors[name].convert(value)
                route = hot_route.route
                scope["starlette.exception_handlers"] = handlers
                if "router" not in scope:
                    scope["router"] = self._router
                scope["path_params"] = params
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                assert handlers is not None
                await _serve(hot_route.handler, handlers, scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _serve(
    handler: Callable[[Request], Awaitable[Response]],
    handlers: tuple[Any, Any],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """What the route's `app` (FastAPI's request wrapper with Starlette's exception handling)
    does for it, without the two exit stacks it opens for every request (`_with_exit_stacks`
    opens them when FastAPI's handler runs): the handler's response is sent, or the answer
    of the exception handler registered for its error; any other error goes on up."""
    request = Request(scope, receive, send)
    started = False

    async def sender(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        response = await handler(request)
        await response(scope, receive, sender)
    except Exception as error:
        exception_handlers, status_handlers = handlers
        answer = None
        if isinstance(error, HTTPException):
            answer = status_handlers.get(error.status_code)
        if answer is None:
            answer = next(
                (exception_handlers[c] for c in type(error).__mro__ if c in exception_handlers),
                None,
            )
        if answer is None:
            raise
        if started:
            raise RuntimeError("Caught handled exception, but response already started.") from error
        if inspect.iscoroutinefunction(answer):
            response = await answer(request, error)
        else:
            response = await run_in_threadpool(answer, request, error)
        if response is not None:
            await response(scope, receive, sender)
        # A reused exception instance would gather tracebacks across requests.
        error.__traceback__ = None


def _exception_handlers(app: ASGIApp) -> tuple[Any, Any] | None:
    """What FastAPI's exception middleware, below, puts in every request's scope."""
    node: Any = app
    while node is not None:
        if isinstance(node, ExceptionMiddleware):
            return node._exception_handlers, node._status_handlers
        node = getattr(node, "app", None)
    return None


def _combined(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    unnamed = (_GROUP_NAME.sub("(?:", p) for p in patterns)  # names may repeat across them
    return re.compile("|".join(f"(?:{p})" for p in unnamed))


_GROUP_NAME = re.compile(r"\(\?P<\w+>")
