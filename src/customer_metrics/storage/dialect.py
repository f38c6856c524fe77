"""The only place SQLite and PostgreSQL are told apart."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    Date,
    DateTime,
    Float,
    Numeric,
    Text,
    bindparam,
    case,
    cast,
    event,
    extract,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.engine import URL, Connection, ExceptionContext, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from customer_metrics.errors import Unavailable
from customer_metrics.storage.native import PLAN_EACH_TIME, SETTINGS
from customer_metrics.storage.types import ExactDecimal, NativeArray, UTCDateTime

READ_ONLY = "cm_read_only"

_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<cols>.+)$")


def async_url(raw: str) -> URL:
    """`postgresql://…` and `sqlite:///…` as a person writes them → the async driver's URL."""
    url = make_url(raw)
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql"):
        return url.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported database URL scheme: {url.drivername!r}")


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: URL) -> None:
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


# Seconds a request waits for a pooled connection before it is answered 503.
POOL_TIMEOUT = 30


def engine_options(url: URL, pool_size: int) -> dict[str, Any]:
    if is_sqlite(url):
        return {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 60}
    # On PostgreSQL requests use the asyncpg pool (pool_size connections at most: PostgreSQL's
    # max_connections is shared by every worker of every server); SQLAlchemy's engine only
    # serves migration checks, one connection at a time.
    return {"pool_size": 1, "max_overflow": 1, "pool_timeout": POOL_TIMEOUT}


def native_dsn(url: URL) -> str:
    """The `postgresql://` URL asyncpg takes, from the SQLAlchemy one."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


SQLITE_BUSY_MS = 30_000  # how long a write waits for SQLite's write lock before a 503


def install_sqlite_transactions(engine: AsyncEngine) -> None:
    """WAL, busy timeout, foreign keys, and `BEGIN IMMEDIATE` for every write transaction.

    The driver's own implicit transactions are switched off: a deferred BEGIN that reads
    then writes fails with "database is locked" under concurrency, and legacy implicit
    transactions lose updates. Read-only requests keep a deferred BEGIN (WAL readers never
    block)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            f"PRAGMA busy_timeout={SQLITE_BUSY_MS}",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _busy(context: ExceptionContext) -> BaseException | None:
        # The write lock stayed taken for the whole busy timeout: the database is busy, which
        # a client may retry (503), not a failure of the request (500).
        if "database is locked" in str(context.original_exception):
            return Unavailable("The database is busy; retry shortly.")
        return None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def violated_constraint(error: IntegrityError) -> str:
    """The name (PostgreSQL) or column list (SQLite) of the unique constraint an insert hit."""
    cause = getattr(error.orig, "__cause__", None)
    name = getattr(cause, "constraint_name", None) or getattr(error.orig, "constraint_name", None)
    if name:
        return str(name)
    match = _SQLITE_UNIQUE.search(str(error.orig))
    return match.group("cols") if match else ""


def upsert_insert(engine_dialect_name: str) -> Any:
    """The `insert` construct that has `on_conflict_do_update/nothing` for this dialect."""
    if engine_dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert


def writes_in_ctes(dialect_name: str) -> bool:
    """Whether INSERT/UPDATE can run inside WITH (PostgreSQL), so that several writes travel
    as one statement; SQLite allows only SELECT there."""
    return dialect_name == "postgresql"


def column_rows(columns: dict[str, Any], name: str, constants: dict[str, Any]) -> Any:
    """PostgreSQL (where `writes_in_ctes`): many rows as a FROM item (a CTE named `name`),
    sent in one statement whatever their number: one array parameter per column of
    `columns` (`unnest`), encoded by asyncpg, and one plain parameter per column of
    `constants`, which hold the same value in every row. Parameters are named after their
    columns; bind them with `column_rows_params`."""
    params = [
        bindparam(column, type_=NativeArray(_array_item(type_)))
        for column, type_ in columns.items()
    ]
    rows = func.unnest(*params).table_valued(*columns).render_derived(name=f"{name}_arrays")
    fields = [
        cast(rows.c[column], type_) if isinstance(type_, ExactDecimal) else rows.c[column]
        for column, type_ in columns.items()
    ]
    same = [bindparam(column, type_=type_).label(column) for column, type_ in constants.items()]
    return select(*same, *fields).cte(name)


ROWS_PARAM = "rows_json"


def json_rows(columns: dict[str, Any], name: str, constants: dict[str, Any] | None = None) -> Any:
    """SQLite: many rows as a FROM item (a CTE named `name`), sent as one JSON text of row
    arrays (`json_each`) and parsed by SQLite; bind them with `json_rows_params`, and the
    columns of `constants` (one value for every row) as plain parameters named after them.
    One statement runs over all the rows without the driver's per-row work, and without
    holding Python's lock meanwhile. (PostgreSQL takes one array per column: `column_rows`.)"""
    each = func.json_each(bindparam(ROWS_PARAM)).table_valued("value")
    fields = [
        func.json_extract(each.c.value, f"$[{i}]").label(column) for i, column in enumerate(columns)
    ]
    same = [
        bindparam(column, type_=type_).label(column) for column, type_ in (constants or {}).items()
    ]
    return select(*same, *fields).cte(name)


def json_rows_params(columns: dict[str, Any], values: dict[str, list[Any]]) -> dict[str, Any]:
    """The parameter of a `json_rows` statement, from one list of values per column."""
    stored = [_sqlite_stored(columns[column], values[column]) for column in columns]
    return {ROWS_PARAM: orjson.dumps(list(zip(*stored, strict=True))).decode()}


def column_rows_params(
    columns: dict[str, Any], values: dict[str, list[Any] | None]
) -> dict[str, Any]:
    """The array parameters of a `column_rows` statement, from one list per column. A column
    missing from `values`, or whose list holds only None, goes as a NULL array: `unnest` pads
    it with NULLs, and nothing is encoded for it."""
    params: dict[str, Any] = {}
    for column, type_ in columns.items():
        items = values.get(column)
        if items is None or items.count(None) == len(items):
            params[column] = None
        elif isinstance(type_, ExactDecimal):
            # Exact decimals travel as text: asyncpg's binary NUMERIC encoder costs about
            # four times the text form (~1 µs a value), and PostgreSQL reads either exactly.
            params[column] = [None if v is None else format(v, "f") for v in items]
        else:
            params[column] = items
    return params


def _array_item(type_: Any) -> Any:
    """What an array parameter of a column of this type holds (see `column_rows_params`)."""
    return Text() if isinstance(type_, ExactDecimal) else _plain(type_)


def _sqlite_stored(type_: Any, items: list[Any]) -> list[Any]:
    if isinstance(type_, UTCDateTime):
        return [None if v is None else _sqlite_time(v) for v in items]
    if isinstance(type_, ExactDecimal):
        return [None if v is None else format(v, "f") for v in items]
    if isinstance(type_, Date):
        return [None if v is None else v.isoformat() for v in items]
    return items


def _sqlite_time(value: datetime) -> str:
    """`2026-01-02 03:04:05.678000`: UTC, naive, to the microsecond."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # Naive first: formatting the offset takes half the time of the whole (10,000 a batch).
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def crosses_tenants_through_functions(dialect_name: str) -> bool:
    """PostgreSQL: row-level security hides other organizations' rows from the service's role,
    so the few statements that must cross tenants (the expiry purge) call functions the
    tables' owner defines (SECURITY DEFINER, migration 0004). SQLite has no row security."""
    return dialect_name == "postgresql"


def first_per(*columns: Any) -> Any:
    """PostgreSQL's DISTINCT ON (for `Select.ext`): one row per value of `columns`, the first
    in the statement's ORDER BY. Only where `writes_in_ctes`."""
    from sqlalchemy.dialects.postgresql import distinct_on

    return distinct_on(*columns)


def _plain(type_: Any) -> Any:
    """The database type under a TypeDecorator: array items go to asyncpg as they are."""
    return type_.impl_instance if isinstance(type_, TypeDecorator) else type_


def like_escape(value: str) -> str:
    """Makes `%`, `_` and `\\` literal inside a LIKE pattern (used with ESCAPE '\\')."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def in_list(column: Any, name: str, item_type: Any, dialect_name: str) -> Any:
    """`column IN (…)` over one list parameter named `name`, however long the list (bind it
    with `in_list_param`): the members of an array (`unnest`) on PostgreSQL, of a JSON array
    (`json_each`) on SQLite. A subquery, not `= ANY(array)`: PostgreSQL searches an array
    parameter linearly for each row it filters (10,000 ids against 10,000 rows: 5 s), while
    it joins a subquery's rows by hash or index."""
    if dialect_name == "sqlite":
        members = func.json_each(bindparam(name)).table_valued("value")
        return column.in_(select(members.c.value))
    return column.in_(select(func.unnest(bindparam(name, type_=NativeArray(item_type)))))


def in_list_param(values: list[Any], dialect_name: str) -> Any:
    """The parameter of an `in_list`: JSON-encodable values (text, numbers)."""
    return json.dumps(values) if dialect_name == "sqlite" else values


# Both drivers cap bound parameters per statement (asyncpg at 32,767): IN lists go in chunks.
IN_CHUNK = 2000


def chunks(items: list[Any], size: int = IN_CHUNK) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def comparable_number(column: Any, dialect_name: str) -> Any:
    """NUMBER values as something SQL can order: NUMERIC on PostgreSQL; on SQLite, whose exact
    text form sorts as text, a REAL (so comparisons there hold to ~15 significant digits)."""
    if dialect_name == "sqlite":
        return cast(column, Float)
    return column


def number_param(value: Decimal, dialect_name: str) -> Any:
    return float(value) if dialect_name == "sqlite" else value


def contains(column: Any, needle: str, dialect_name: str) -> Any:
    """Case-sensitive substring test (LIKE is case-insensitive on SQLite)."""
    position = func.instr if dialect_name == "sqlite" else func.strpos
    return position(column, needle) > 0


def starts_with(column: Any, prefix: str) -> Any:
    return func.substr(column, 1, len(prefix)) == prefix


def bytewise(column: Any, dialect_name: str) -> Any:
    """Text ordered by code point on both databases (PostgreSQL would use the locale)."""
    return column.collate("C") if dialect_name == "postgresql" else column


def planned_each_time(statement: Any) -> Any:
    """A read planned for the values it runs with, never with a cached generic plan
    (PostgreSQL; see `native.PLAN_EACH_TIME`). SQLite plans every statement anyway."""
    return statement.execution_options(**{PLAN_EACH_TIME: True})


# Reads that aggregate millions of rows: PostgreSQL would compile them to machine code (JIT)
# first, which with its default thresholds cost 0.3-0.9 s of a series' time before it read a
# row, and gained less than that on these plans.
_ANALYTIC_SETTINGS = (("jit", "off"),)


def analytic(statement: Any) -> Any:
    """A read over a large share of a metric's rows (a series or a summary over every
    customer), or the rollup's fold: planned for its values (`planned_each_time`), and on
    PostgreSQL run without JIT compilation (transaction-local, see `native.SETTINGS`)."""
    return planned_each_time(statement).execution_options(**{SETTINGS: _ANALYTIC_SETTINGS})


# How many parts a scan of a metric's observations over a time range is split into on
# PostgreSQL (see `time_parts`); SQLite reads one.
_TIME_PARTS = 4


def time_parts(dialect_name: str) -> int:
    """Parts a long time range is read in: PostgreSQL plans a GROUP BY over a UNION ALL of
    parts as a parallel scan whose workers each aggregate what they read (the planner cannot
    tell how many buckets an expression like `width_bucket` yields, so over one scan it
    expects a group per row and aggregates every row in one process; over a UNION ALL it
    assumes a few hundred groups). SQLite has no parallel query."""
    return _TIME_PARTS if dialect_name == "postgresql" else 1


def per_row(subquery: Any, dialect_name: str) -> Any:
    """A subquery for EXISTS (or LATERAL) that runs once per outer row (a lookup by key),
    instead of being turned into a join over every row it could match: PostgreSQL leaves a
    subquery that has an OFFSET as it is written. For outer rows that are few by
    construction."""
    return subquery.offset(0) if dialect_name == "postgresql" else subquery


def bucket_index(column: Any, bounds: list[datetime], dialect_name: str) -> Any:
    """Which of the contiguous buckets `bounds` delimit (starts, then the last end) holds
    `column`: -1 before the first start, k for [bounds[k], bounds[k + 1]), len(bounds) - 1
    from the last end on. PostgreSQL's width_bucket is a binary search over one array
    parameter; SQLite has none, so there it is a binary search written as nested CASEs."""
    if dialect_name == "postgresql":
        stamps = cast(
            bindparam(None, bounds, type_=NativeArray(DateTime(timezone=True))),
            ARRAY(DateTime(timezone=True)),
        )
        return func.width_bucket(column, stamps) - 1
    edges = [bindparam(None, b, type_=UTCDateTime()) for b in bounds]

    def below(low: int, high: int) -> Any:
        """How many bounds are at or before `column`, knowing it is in [low, high]."""
        if low == high:
            return literal(low)
        middle = (low + high) // 2
        return case((edges[middle] <= column, below(middle + 1, high)), else_=below(low, middle))

    return below(0, len(bounds)) - 1


def json_array_has(column: Any, value: Any) -> Any:
    """Whether the JSON array in `column` holds the string `value` (PostgreSQL's jsonb `?`).
    Used only by statements that check remembered lookups, which run on PostgreSQL only."""
    return column.op("?")(value)


# What `clock.format_timestamp` writes (`2025-11-27T10:06:09.459Z`), as PostgreSQL's to_char
# pattern; MS truncates like Python's isoformat(timespec="milliseconds").
_RFC3339_UTC = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'


def renders_json(dialect_name: str) -> bool:
    """Whether the database builds JSON answers itself (`json_array_of`): PostgreSQL."""
    return dialect_name == "postgresql"


def utc_text(column: Any) -> Any:
    """PostgreSQL: a timestamptz as the API writes it, text in UTC with milliseconds."""
    return _infinities(
        column, func.to_char(func.timezone("UTC", column), _RFC3339_UTC), _UTC_MIN, _UTC_MAX
    )


def date_text(column: Any) -> Any:
    """PostgreSQL: a date as the API writes it (`2027-02-28`, whatever the DateStyle)."""
    return _infinities(column, func.to_char(column, "YYYY-MM-DD"), "0001-01-01", "9999-12-31")


# asyncpg writes Python's smallest date and datetime, and its largest date, as PostgreSQL's
# -infinity and infinity (and reads them back as those Python values): text rendered by
# the database must say what Python would.
_UTC_MIN = "0001-01-01T00:00:00.000Z"
_UTC_MAX = "9999-12-31T23:59:59.999Z"


def _infinities(column: Any, finite: Any, smallest: str, largest: str) -> Any:
    return case(
        (column == literal_column("'-infinity'"), literal(smallest)),
        (column == literal_column("'infinity'"), literal(largest)),
        else_=finite,
    )


def zero_padded(column: Any, width: int) -> Any:
    """PostgreSQL: an integer as text padded with zeros to `width` digits (never cut)."""
    text = cast(column, Text())
    return case((func.length(text) < width, func.lpad(text, width, "0")), else_=text)


def json_of(column: Any) -> Any:
    """PostgreSQL: a value as JSON, numerics with exactly their stored digits."""
    return func.to_json(column)


def json_array_of(fields: list[tuple[str, Any]], order_by: Any) -> Any:
    """PostgreSQL: the rows of a query as one compact JSON array of objects, as text (NULL
    when there are none), built by the database: for a read of many small rows it spares the
    worker decoding them and rendering each field (the agent view's 50 rows). Each field is
    a `json_of` expression; the text is what orjson would write for the same values."""
    parts: list[Any] = []
    for i, (name, value) in enumerate(fields):  # names are the service's own constants
        parts += [
            literal_column(f"'{'{' if i == 0 else ','}\"{name}\":'"),
            func.coalesce(cast(value, Text()), literal_column("'null'")),
        ]
    parts.append(literal_column("'}'"))
    obj = parts[0].concat(parts[1])
    for part in parts[2:]:
        obj = obj.concat(part)
    rows = func.string_agg(obj, aggregate_order_by(literal_column("','"), order_by))
    return literal_column("'['").concat(rows).concat(literal_column("']'"))


def epoch_period(column: Any, seconds: int) -> Any:
    """PostgreSQL: the start of the `seconds`-long period, counted from the Unix epoch (UTC),
    that holds the timestamptz `column`: what `queries.rollup.period_of` gives in Python
    (floored, also before 1970). Exact: the epoch is a NUMERIC to the microsecond, and the
    whole multiple of `seconds` it is floored to converts to a timestamp exactly (the
    formula of migration 0007)."""
    length: Any = literal_column(str(int(seconds)))
    epoch = type_coerce(extract("epoch", column), Numeric())
    return func.to_timestamp(func.floor(epoch.op("/")(length)) * length)


def fold_lock(organization_id: int, dialect_name: str) -> Any:
    """A statement that takes the organization's series-rollup fold lock for the transaction
    and says whether it got it (PostgreSQL: an advisory lock, not waited for), so folds of
    one organization never run side by side. None on SQLite, whose write transactions are
    exclusive already."""
    if dialect_name != "postgresql":
        return None
    key = organization_id % 2_147_483_647  # collisions only make a fold wait for the next turn
    lock = select(func.pg_try_advisory_xact_lock(func.hashtext("cm_rollup_fold"), key))
    # FOR UPDATE (of no table: it locks nothing else) makes it a locking read, which opens
    # the transaction (storage/native.py). A plain read ran as a statement of its own where
    # row-level security is off (no transaction is opened for reads there), and the lock
    # was gone when it returned: two workers' folds of one organization ran side by side.
    return lock.with_for_update()
