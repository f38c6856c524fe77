"""PostgreSQL requests run on asyncpg directly: statements are still SQLAlchemy Core, compiled
once per statement object by SQLAlchemy's own asyncpg dialect, but executed without its
connection, result and greenlet layers, which cost several times the database round trip.

`NativeConnection` offers the part of `AsyncConnection` the repositories use (`execute`,
`exec_driver_sql`, `dialect`), so one repository serves both databases."""

from __future__ import annotations

import json
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase, ValuesBase
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import CompoundSelect, Select
from sqlalchemy.util import LRUCache

# Execution option of a statement that switches its own transaction to asynchronous commit:
# the connection then owes a wait for durability (`wait_durable`) before the answer.
ASYNC_COMMIT = "cm_async_commit"
# Execution option of a read whose best plan depends on its parameters (how many rows a
# metric, a value range or a time range holds): it is planned for each execution's values.
# A cached prepared statement switches to PostgreSQL's generic plan after five runs, and
# for these that plan can be ten times slower (a 12-month series: an index scan
# fetching 4.6M rows one by one, 30 s, instead of a 3 s scan).
PLAN_EACH_TIME = "cm_plan_each_time"
# Execution option of a read that runs with these settings, `((name, value), …)`: they are set
# with SET LOCAL in the statement's transaction (one is opened for it when none is) and put
# back to the session's values after it, so they reach no other statement.
SETTINGS = "cm_settings"

DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]

# Errors that mean the connection is gone, not that the statement was wrong.
_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
)


# A synchronous commit that writes WAL: it returns once the WAL is on disk up to its own
# commit record, and WAL is flushed in order, so every transaction that committed before it
# was sent is durable too. It must write WAL: PostgreSQL commits a transaction that wrote
# none (even one holding a transaction id, as `SELECT pg_current_xact_id()` does) without
# flushing anything. A transactional logical message is the smallest WAL-writing statement
# any role may run; nothing reads it unless logical decoding is set up to. Its own
# transaction commits synchronously whatever the session's default (set_config is local to
# it): an operator's `synchronous_commit = off` must not turn the wait into a no-op again.
FLUSH_WAL = (
    "SELECT set_config('synchronous_commit', 'on', true),"
    " pg_logical_emit_message(true, 'customer-metrics', 'durable')"
)


async def init_connection(connection: asyncpg.Connection) -> None:
    """The JSON codecs SQLAlchemy's asyncpg dialect installs: its JSON bind processor hands
    over text, and rows come back as Python objects."""
    await connection.set_type_codec(
        "json",
        encoder=str.encode,
        decoder=lambda raw: json.loads(raw.decode()),
        schema="pg_catalog",
        format="binary",
    )
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda text: b"\x01" + text.encode(),
        decoder=lambda raw: json.loads(raw[1:].decode()),
        schema="pg_catalog",
        format="binary",
    )


async def keep_connection(_connection: asyncpg.Connection) -> None:
    """Pool reset: nothing beyond asyncpg's own rollback of an open transaction. The service
    sets no session state (settings are transaction-local, the tenant's included), so
    `RESET ALL` and friends would be a round trip per request for nothing."""


# Whether row-level security filters any tenant table for the connected role: false for a
# superuser, a BYPASSRLS role or the tables' owner (no FORCE), and before the policies exist.
_ROW_SECURITY_ACTIVE = """
SELECT coalesce(bool_or(row_security_active(to_regclass(name))), false)
FROM unnest($1::text[]) AS name
"""


async def row_security_active(connection: asyncpg.Connection, tables: Sequence[str]) -> bool:
    return bool(await connection.fetchval(_ROW_SECURITY_ACTIVE, list(tables)))


# The transaction-local setting the row-level security policies compare organization_id with.
TENANT_SETTING = "cm.organization_id"


def _begin_for(organization_id: int) -> str:
    # One simple-protocol round trip for both statements; the id is an int, never client text.
    return f"BEGIN; SELECT set_config('{TENANT_SETTING}', '{int(organization_id)}', true)"


class Result:
    """The slice of SQLAlchemy's `Result` the repositories use; rows are named tuples."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise LookupError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


class _Compiled:
    """One statement compiled for asyncpg: SQL text, parameter order, converters."""

    __slots__ = (
        "async_commit",
        "bind",
        "compiled",
        "expands",
        "names",
        "reads_only",
        "result",
        "returns_rows",
        "row",
        "sql",
    )

    def __init__(
        self, statement: ClauseElement, keys: tuple[str, ...] | None, cache_key: Any = None
    ) -> None:
        compiled = DIALECT.statement_compiler(
            DIALECT, statement, cache_key=cache_key, column_keys=keys
        )
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())
        self.bind: Mapping[str, Callable[[Any], Any]] = compiled._bind_processors  # type: ignore[assignment]
        self.expands = bool(compiled.post_compile_params or compiled.literal_execute_params)
        self.returns_rows = bool(compiled._result_columns) or isinstance(statement, TextClause)
        # A plain SELECT before the transaction's first write needs no transaction yet (each
        # statement sees committed data either way, under READ COMMITTED); one that locks
        # rows (FOR UPDATE) does.
        options = getattr(statement, "_execution_options", None) or {}
        self.async_commit = bool(options.get(ASYNC_COMMIT))
        writes_inside = any(isinstance(cte.element, UpdateBase) for cte in compiled.ctes or ())
        self.reads_only = not writes_inside and (
            (isinstance(statement, Select) and statement._for_update_arg is None)
            or isinstance(statement, CompoundSelect)
        )
        processors = [_result_processor(entry.type) for entry in compiled._result_columns or ()]
        self.result = processors if any(processors) else None
        self.row: Any = None

    def arguments(
        self, params: Mapping[str, Any] | None, extracted: Sequence[Any] | None
    ) -> tuple[str, list[Any]]:
        """SQL text and positional arguments; `extracted` are the literal values of the
        statement at hand when it shares its compiled form with an equal-shaped one."""
        compiled = self.compiled
        if self.expands:
            values = compiled.construct_params(
                params, extracted_parameters=extracted, _no_postcompile=True
            )
            state = compiled._process_parameters_for_postcompile(values)
            return state.statement, _processed(
                state.parameters, state.positiontup or (), state.processors
            )
        values = compiled.construct_params(params, extracted_parameters=extracted)
        return self.sql, _processed(values, self.names, self.bind)

    def rows(self, records: list[asyncpg.Record]) -> list[Any]:
        if not records:
            return []
        if self.row is None:
            self.row = namedtuple("Row", list(records[0].keys()), rename=True)  # type: ignore[misc]
        make = self.row._make
        if self.result is None:
            return [make(record) for record in records]
        converted = [(i, f) for i, f in enumerate(self.result) if f is not None]
        out = []
        for record in records:
            values = list(record)
            for i, convert in converted:
                if values[i] is not None:
                    values[i] = convert(values[i])
            out.append(make(values))
        return out


def _result_processor(type_: Any) -> Callable[[Any], Any] | None:
    try:
        return type_._cached_result_processor(DIALECT, None)  # type: ignore[no-any-return]
    except (TypeError, InvalidRequestError):
        # Numeric processors depend on the column's type OID, unknown until a row arrives:
        # asyncpg hands NUMERIC over as Decimal already, and a float becomes one here.
        return _decimal_if_float if getattr(type_, "asdecimal", False) else None


def _decimal_if_float(value: Any) -> Any:
    return Decimal(repr(value)) if isinstance(value, float) else value


def _processed(
    values: Mapping[str, Any], names: Sequence[str], processors: Mapping[str, Any]
) -> list[Any]:
    out = []
    for name in names:
        value = values[name]
        process = processors.get(name)
        out.append(value if process is None or value is None else process(value))
    return out


# Compiled forms are shared by every statement of the same shape, as in SQLAlchemy's own
# cache (keyed by the same cache keys); literal values travel as extracted parameters. An
# INSERT or UPDATE without explicit values sets the columns its parameters name: those
# compile once per set of names. Statements built once (module constants, lru_caches) also
# skip the cache-key walk.
_BY_SHAPE: LRUCache[Any, _Compiled] = LRUCache(2000)
_BY_OBJECT: weakref.WeakKeyDictionary[ClauseElement, dict[Any, _Compiled]] = (
    weakref.WeakKeyDictionary()
)


def _compiled(
    statement: ClauseElement, params: Mapping[str, Any] | None
) -> tuple[_Compiled, Sequence[Any] | None]:
    keys = tuple(sorted(params)) if params and isinstance(statement, ValuesBase) else None
    known = _BY_OBJECT.get(statement)
    if known is not None and keys in known:
        return known[keys], None
    cache_key = statement._generate_cache_key()
    if cache_key is None:  # a construct that cannot be cached: compile every time
        return _Compiled(statement, keys), None
    shape = (cache_key.key, keys)
    found = _BY_SHAPE.get(shape)
    if found is None:
        found = _BY_SHAPE[shape] = _Compiled(statement, keys, cache_key)
        _BY_OBJECT.setdefault(statement, {})[keys] = found
        return found, None
    return found, cache_key.bindparams


def _planned_each_time(statement: ClauseElement) -> bool:
    # Read from the statement, not its compiled form, which equal-shaped statements share.
    options = getattr(statement, "_execution_options", None) or {}
    return bool(options.get(PLAN_EACH_TIME))


def _settings_of(statement: ClauseElement) -> tuple[tuple[str, str], ...]:
    options = getattr(statement, "_execution_options", None) or {}
    return tuple(options.get(SETTINGS, ()))


def _set_local(settings: Sequence[tuple[str, str]], *, default: bool = False) -> str:
    # Names and values are the service's own constants, never client text.
    if default:
        return "; ".join(f"SET LOCAL {name} TO DEFAULT" for name, _ in settings)
    return "; ".join(f"SET LOCAL {name} = '{value}'" for name, value in settings)


def _rowcount(status: str) -> int:
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


class NativeConnection:
    """One pooled asyncpg connection and its transaction state, for one request.

    Outside autocommit, BEGIN goes out with the first statement that writes or locks: reads
    that come first run on their own, saving the round trips of a transaction for requests
    that turn out to write nothing (a 404, a 409 found by a read).

    Under row-level security (`row_security`, once the tenant is known through `scope`)
    every statement runs in a transaction whose first round trip also sets the tenant
    (transaction-local, so it ends with the transaction and never reaches the connection's
    next user): reads open one too, and keep it until the session commits or closes; in
    autocommit a write commits right after its statement."""

    dialect = DIALECT

    def __init__(
        self, connection: asyncpg.Connection, autocommit: bool, row_security: bool = False
    ) -> None:
        self.raw = connection
        self.autocommit = autocommit
        self.row_security = row_security
        self.organization_id: int | None = None
        self.in_transaction = False
        # Whether the open transaction ran anything but plain reads.
        self.wrote = False
        # Set when the connection failed under a statement: it is closed, not pooled again.
        self.broken = False
        # Set by a statement committed asynchronously, until wait_durable.
        self.unflushed = False

    @property
    def scoped(self) -> bool:
        """Statements must run in a transaction that names the tenant."""
        return self.row_security and self.organization_id is not None

    def scope(self, organization_id: int) -> None:
        if self.row_security and self.in_transaction:
            raise RuntimeError("the tenant must be known before the transaction begins")
        self.organization_id = organization_id

    async def _begin(self, then: str = "") -> None:
        """BEGIN (naming the tenant under row-level security), and `then` in the same round
        trip."""
        if self.scoped:
            assert self.organization_id is not None
            sql = _begin_for(self.organization_id)
        else:
            sql = "BEGIN"
        await self.raw.execute(f"{sql}; {then}" if then else sql)
        self.in_transaction = True
        self.wrote = False

    async def _begin_if_needed(self) -> None:
        if not self.autocommit and not self.in_transaction:
            await self._begin()

    async def execute(
        self,
        statement: ClauseElement,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> Result:
        many = isinstance(params, Sequence) and not isinstance(params, Mapping)
        first = (params[0] if params else None) if many else params  # type: ignore[index]
        compiled, extracted = _compiled(statement, first)  # type: ignore[arg-type]
        try:
            if not self.in_transaction and (
                self.scoped or not (self.autocommit or compiled.reads_only)
            ):
                await self._begin()
            if not compiled.reads_only:
                self.wrote = True
            if many:
                result = await self._execute_many(compiled, extracted, params)  # type: ignore[arg-type]
            else:
                result = await self._execute_one(compiled, extracted, params, statement)  # type: ignore[arg-type]
        except _LOST as error:
            raise self._lost(error, compiled.sql) from error
        except asyncpg.PostgresError as error:
            if self.autocommit and self.in_transaction:
                await self._roll_back_alone()
            raise _translated(error, compiled.sql) from error
        if self.autocommit and self.in_transaction and not compiled.reads_only:
            await self.end(commit=True)  # autocommit under row-level security
        return result

    async def _execute_one(
        self,
        compiled: _Compiled,
        extracted: Sequence[Any] | None,
        params: Mapping[str, Any] | None,
        statement: ClauseElement,
    ) -> Result:
        settings = _settings_of(statement)
        if not settings:
            return await self._run_one(compiled, extracted, params, statement)
        # SET LOCAL needs a transaction; one opened here only for this read ends with it.
        opened = not self.in_transaction
        if opened:
            await self._begin(then=_set_local(settings))
        else:
            await self.raw.execute(_set_local(settings))
        try:
            result = await self._run_one(compiled, extracted, params, statement)
        except BaseException:
            if opened:
                await self._roll_back_alone()
            raise
        if opened:
            await self.end(commit=True)
        else:
            await self.raw.execute(_set_local(settings, default=True))
        return result

    async def _run_one(
        self,
        compiled: _Compiled,
        extracted: Sequence[Any] | None,
        params: Mapping[str, Any] | None,
        statement: ClauseElement,
    ) -> Result:
        sql, args = compiled.arguments(params, extracted)
        if compiled.async_commit:
            self.unflushed = True
        if compiled.returns_rows:
            if _planned_each_time(statement):
                # A statement prepared afresh (outside asyncpg's cache) runs a plan made for
                # these values: PostgreSQL plans the first runs of each one so.
                prepared = await self.raw.prepare(sql)
                records = await prepared.fetch(*args)
            else:
                records = await self.raw.fetch(sql, *args)
            return Result(compiled.rows(records), len(records))
        return Result([], _rowcount(await self.raw.execute(sql, *args)))

    async def _execute_many(
        self,
        compiled: _Compiled,
        extracted: Sequence[Any] | None,
        params: Sequence[Mapping[str, Any]],
    ) -> Result:
        if compiled.returns_rows:
            raise ValueError("executemany with RETURNING is not supported on asyncpg")
        if not params:
            return Result([], 0)
        batches: dict[str, list[list[Any]]] = {}
        for one in params:
            sql, args = compiled.arguments(one, extracted)
            batches.setdefault(sql, []).append(args)
        for sql, rows in batches.items():
            await self.raw.executemany(sql, rows)
        return Result([], len(params))

    async def _roll_back_alone(self) -> None:
        """In autocommit a failed statement takes only itself back, as it would without the
        transaction row-level security wraps it in: the next statement starts afresh."""
        self.in_transaction = False
        try:
            await self.raw.execute("ROLLBACK")
        except (*_LOST, asyncpg.PostgresError):  # in doubt: the pool drops the connection
            self.broken = True

    async def exec_driver_sql(self, sql: str) -> None:
        try:
            await self._begin_if_needed()
            self.wrote = True
            await self.raw.execute(sql)
        except _LOST as error:
            raise self._lost(error, sql) from error
        except asyncpg.PostgresError as error:
            raise _translated(error, sql) from error

    async def wait_durable(self, barrier: Any = None) -> None:
        """Returns once every transaction this connection committed is on disk, including
        those committed with `synchronous_commit` off (FLUSH_WAL). Given a
        `DurabilityBarrier` (storage/database.py), one flush serves every request waiting
        at the same time; without one, or when it fails, this connection flushes."""
        if self.unflushed:
            if self.autocommit:
                await self.end(commit=True)  # reads kept open under row-level security
            if barrier is None or not await barrier.wait():
                await self.exec_driver_sql(FLUSH_WAL)
            self.unflushed = False

    def _lost(self, error: BaseException, sql: str) -> Exception:
        self.broken = True
        self.in_transaction = False
        return DBAPIError(sql, None, error, connection_invalidated=True)

    async def end(self, *, commit: bool) -> None:
        """COMMIT or ROLLBACK the open transaction, if a statement opened one."""
        if not self.in_transaction:
            return
        self.in_transaction = False
        self.wrote = False
        try:
            await self.raw.execute("COMMIT" if commit else "ROLLBACK")
        except _LOST as error:
            raise self._lost(error, "COMMIT") from error
        except asyncpg.PostgresError as error:
            raise _translated(error, "COMMIT") from error


def _translated(error: asyncpg.PostgresError, sql: str) -> Exception:
    """The SQLAlchemy exception the same failure raises through SQLAlchemy, so callers catch
    one family whatever the database."""
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(sql, None, error)
    return DBAPIError(sql, None, error)
