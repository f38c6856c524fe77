"""The agent view's SQL, taken from the service itself (ValueRepository.current_view compiled
for PostgreSQL with the values bound in), and its `EXPLAIN (ANALYZE, BUFFERS)`."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql

from customer_metrics.tenancy import Tenant
from customer_metrics.values.repository import ValueRepository


class _Captured(Exception):
    def __init__(self, statement: Any, params: dict[str, Any] | None) -> None:
        super().__init__("captured")
        self.statement = statement.params(params) if params else statement


class _Capture:
    """Stands in for the session's connection: raises with the first statement it is given."""

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        raise _Captured(statement, params)


async def _capture(org: int, customer_id: str) -> str:
    repository = ValueRepository.__new__(ValueRepository)
    repository._conn = _Capture()  # type: ignore[assignment]
    repository._org = org
    # A key looked up by the request (the plan of a remembered key's view adds one probe
    # of api_keys by its unique hash).
    repository._tenant = Tenant(organization_id=org, api_key_id=0)
    try:
        await repository.current_view(customer_id)
    except _Captured as captured:
        compiled = captured.statement.compile(
            dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
            compile_kwargs={"literal_binds": True},
        )
        return str(compiled)
    raise RuntimeError("current_view ran no statement")


def view_sql(org: int, customer_id: str) -> str:
    """The SELECT the service runs for GET /external/v1/customers/{customer_id}/metrics."""
    return asyncio.run(_capture(org, customer_id))


_PLACEHOLDER = "cm-bench-customer-placeholder"


def view_sql_with_parameter(org: int) -> str:
    """`view_sql` with the customer id as `$1`, for the floor server to prepare once."""
    sql = view_sql(org, _PLACEHOLDER)
    assert sql.count(f"'{_PLACEHOLDER}'") == 1, sql
    return sql.replace(f"'{_PLACEHOLDER}'", "$1")


async def _explain(url: str, sql: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        await conn.fetch(sql)  # once to warm the cache, as the service's steady state is
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql)
    finally:
        await conn.close()
    return [str(r[0]) for r in rows]


def explain(url: str, sql: str) -> list[str]:
    """The plan lines of `EXPLAIN (ANALYZE, BUFFERS) sql` on the database at `url`."""
    return asyncio.run(_explain(url, sql))
