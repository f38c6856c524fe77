"""The floor for create benchmarks: bare Starlette + asyncpg doing one `INSERT … RETURNING`
per request, served by uvicorn with one worker. It is what a minimal Python ASGI app on the
same PostgreSQL reaches; the service is measured as a fraction of it.

    python bench/floor_server.py --port 8100 --database-url postgresql://…/cm_bench

With `--view-sql FILE` it also answers `GET /view/{customer_id}` with one statement from the
file (`$1` is the customer id; its one row's `data` column is the JSON array to answer):
the agent view's floor, with no key, no validation and no framework beyond Starlette.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TABLE = """
CREATE TABLE IF NOT EXISTS bench_floor (
    id bigserial PRIMARY KEY,
    organization_id bigint NOT NULL,
    name text NOT NULL,
    data_type text NOT NULL,
    time_created timestamptz NOT NULL DEFAULT now()
)"""
INSERT = """
INSERT INTO bench_floor (organization_id, name, data_type) VALUES ($1, $2, $3)
RETURNING id, organization_id, name, data_type, time_created"""
ORGANIZATION_ID = 1


def create_app(database_url: str, pool_size: int, view_sql: str | None = None) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(database_url, min_size=pool_size, max_size=pool_size)
        await pool.execute(TABLE)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    async def create(request: Request) -> Response:
        body: Any = await request.json()
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str):
            return JSONResponse({"detail": "name is required"}, status_code=422)
        row = await request.app.state.pool.fetchrow(
            INSERT, ORGANIZATION_ID, name, str(body.get("data_type", "NUMBER"))
        )
        out = dict(row)
        out["time_created"] = row["time_created"].isoformat()
        return JSONResponse(out, status_code=201)

    async def view(request: Request) -> Response:
        row = await request.app.state.pool.fetchrow(view_sql, request.path_params["customer_id"])
        if row is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        body = b'{"data":' + (row["data"] or "[]").encode() + b"}"
        return Response(body, media_type="application/json")

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [Route("/floor", create, methods=["POST"]), Route("/health", health)]
    if view_sql:
        routes.append(Route("/view/{customer_id}", view))
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description="The benchmark floor server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--view-sql", help="file with the agent view's statement ($1: customer)")
    args = parser.parse_args()
    view_sql = open(args.view_sql).read() if args.view_sql else None  # noqa: SIM115
    uvicorn.run(
        create_app(args.database_url, args.pool_size, view_sql),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
