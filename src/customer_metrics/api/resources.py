"""The methods each resource answers, for the `Allow` header of a 405. Starlette's 405 lists
only the methods of the first route that matched the path, and FastAPI makes one route per
method: `GET` and `POST /customers/metrics` are two routes, so a 405 there said `Allow: POST`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import compile_path


class Resources:
    def __init__(self, mounts: Iterable[tuple[str, APIRouter]]) -> None:
        """`mounts`: (prefix, router) in the order the app includes them."""
        methods: dict[str, set[str]] = {}
        for prefix, router in mounts:
            for route in router.routes:
                if isinstance(route, APIRoute):
                    methods.setdefault(prefix + route.path, set()).update(route.methods or ())
        self._resources: list[tuple[re.Pattern[str], str]] = [
            (compile_path(template)[0], ", ".join(sorted(allowed)))
            for template, allowed in methods.items()
        ]

    def allow(self, path: str) -> str | None:
        """The methods of the first path template (in routing order) that matches `path`: the
        route a request would reach. `PUT /customers/metrics` is answered by the customer route
        (422, a reserved id), but `/customers/metrics` is the metric collection: GET, POST."""
        return next((allowed for pattern, allowed in self._resources if pattern.match(path)), None)
