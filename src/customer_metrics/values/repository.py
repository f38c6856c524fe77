"""Observations and current values; every statement is scoped to the tenant. The current-value
row of a (customer, metric) is kept equal to its latest observation in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    literal_column,
    null,
    select,
    true,
)
from sqlalchemy.sql import ColumnElement

from customer_metrics.api_keys.repository import key_still_active
from customer_metrics.errors import StaleLookup
from customer_metrics.metrics.repository import MetricRow, definition_still_allows
from customer_metrics.storage.database import Session
from customer_metrics.storage.dialect import (
    column_rows,
    column_rows_params,
    date_text,
    first_per,
    json_array_of,
    json_of,
    json_rows,
    json_rows_params,
    renders_json,
    upsert_insert,
    utc_text,
    writes_in_ctes,
    zero_padded,
)
from customer_metrics.storage.models import (
    CurrentValue,
    Customer,
    Metric,
    Observation,
    Rollup,
    RollupDirty,
    RollupRow,
    table_of,
)
from customer_metrics.tenancy import Tenant
from customer_metrics.values.typed import COLUMN_OF, VALUE_COLUMNS

_obs = table_of(Observation)
_cur = table_of(CurrentValue)
_metrics = table_of(Metric)
_customers = table_of(Customer)
_dirty = table_of(RollupDirty)
ROLLUP_TABLES = (table_of(Rollup), table_of(RollupRow), _dirty)


@dataclass(frozen=True, slots=True)
class StoredObservation:
    observed_at: datetime
    recorded_at: datetime
    source: str | None
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ObservationRows:
    """Observations to store, one list per column (one entry per row), at most one per
    (customer, metric, observed_at), all recorded at `recorded_at`. `values` holds the
    value columns in use: a column it leaves out is NULL in every row."""

    customer_refs: list[int]
    metric_refs: list[int]
    observed_at: list[datetime]
    sources: list[str | None]
    values: dict[str, list[Any]]
    recorded_at: datetime

    @classmethod
    def of(
        cls, customer_ref: int, metric_ref: int, observation: StoredObservation
    ) -> ObservationRows:
        return cls(
            [customer_ref],
            [metric_ref],
            [observation.observed_at],
            [observation.source],
            {c: [v] for c, v in observation.values.items() if v is not None},
            observation.recorded_at,
        )


@dataclass(frozen=True, slots=True)
class PreparedRows:
    """Observations to store as the database takes them: `ValueRepository.prepare_rows`."""

    statements: tuple[Any, ...]
    params: dict[str, Any]


class CurrentRow(NamedTuple):  # a tuple: made 50 times per agent view, cheaper than a dataclass
    metric_ref: int
    key: str
    name: str
    data_type: str
    unit: str | None
    observed_at: datetime
    value: Any  # from the column of the metric's data_type


@dataclass(frozen=True, slots=True)
class RenderedView:
    """The agent view's `data` array, rendered as JSON text by the database."""

    json_array: str


@dataclass(frozen=True, slots=True)
class Usage:
    customers: int
    values: int
    last_value_at: datetime | None


def _values(row: Any) -> dict[str, Any]:
    return {c: getattr(row, c) for c in VALUE_COLUMNS}


_UPDATED = ("recorded_at", "source", *VALUE_COLUMNS)
_MARKED = ("organization_id", "metric_ref", "customer_ref", "since")


def mark_changed(source: Any, dialect_name: str) -> Any:
    """Marks customers' observations of a metric as changed from `since` on, for the series
    rollup's next fold: `source` selects (organization_id, metric_ref, customer_ref, since),
    at most one row per customer and metric. Only that customer's and metric's row is
    written (the earlier `since` kept, its version bumped), so writers of different
    customers never wait for each other here."""
    insert = upsert_insert(dialect_name)
    stmt = insert(_dirty).from_select(_MARKED, source)  # version: the column default, 0
    earlier = case(
        (stmt.excluded.since < _dirty.c.since, stmt.excluded.since), else_=_dirty.c.since
    )
    return stmt.on_conflict_do_update(
        index_elements=list(_dirty.primary_key.columns),
        set_={"since": earlier, "version": _dirty.c.version + literal_column("1")},
    )


_WRITTEN = ("metric_ref", "observed_at", "recorded_at", "source", *VALUE_COLUMNS)


@lru_cache(maxsize=4)
def _record_by_customer_id(check_key: bool, check_metric: bool) -> Any:
    """Where the database runs writes inside WITH: one statement (one round trip, its own
    transaction) that finds the customer by customer_id, upserts the observation and moves
    the current value forward. It returns one row: the customer's ref (NULL, with nothing
    stored, when there is no such customer) and `fresh`.

    `check_key`, `check_metric`: the API key, the metric definition came from the worker's
    memory (KnownKeys, KnownMetrics); the statement stores nothing unless the key is still
    active and the definition still allows the value, and `fresh` says whether they did."""
    insert = upsert_insert("postgresql")
    org = bindparam("organization_id", type_=_obs.c.organization_id.type)
    customer = (
        select(_customers.c.id)
        .where(
            _customers.c.organization_id == org,
            _customers.c.customer_id
            == bindparam("customer_id", type_=_customers.c.customer_id.type),
        )
        .cte("customer")
    )
    fields = [bindparam(name, type_=_obs.c[name].type) for name in _WRITTEN]
    checks = []
    if check_key:
        checks.append(key_still_active(org, bindparam("key_hash", type_=String())))
    if check_metric:
        metric_ref = bindparam("metric_ref", type_=_obs.c.metric_ref.type)
        value_text = bindparam("value_text", type_=_obs.c.value_text.type)
        checks.append(definition_still_allows(org, metric_ref, value_text))
    fresh: Any = true()
    if checks:  # checked once, in a CTE of its own, for both writes and the answer
        fresh = select(and_(*checks).label("ok")).cte("checked").c.ok
    source = select(org, customer.c.id, *fields).where(fresh)
    names = ["organization_id", "customer_ref", *_WRITTEN]
    observations = insert(_obs).from_select(names, source)
    observations = observations.on_conflict_do_update(
        index_elements=list(_obs.primary_key.columns),
        set_={c: observations.excluded[c] for c in _UPDATED},
    )
    current = insert(_cur).from_select(names, source)
    current = current.on_conflict_do_update(
        index_elements=list(_cur.primary_key.columns),
        set_={c: current.excluded[c] for c in (*_UPDATED, "observed_at")},
        where=_cur.c.observed_at <= current.excluded.observed_at,
    )
    changed = select(org, fields[0], customer.c.id, fields[1]).where(fresh)
    marked = mark_changed(changed, "postgresql")
    answer = select(select(customer.c.id).scalar_subquery().label("customer_ref"))
    answer = answer.add_columns(fresh.label("fresh"))
    return answer.add_cte(observations.cte("observed"), current.cte("moved"), marked.cte("marked"))


_ROW_COLUMNS = ("organization_id", "customer_ref", *_WRITTEN)
_ROW_TYPES = {name: _obs.c[name].type for name in _ROW_COLUMNS}
# What `record_rows` sends once for every row, and what one entry per row.
_SAME_FOR_ALL = ("organization_id", "recorded_at")
_CONSTANT_TYPES = {name: _ROW_TYPES[name] for name in _SAME_FOR_ALL}
_ARRAY_TYPES = {name: t for name, t in _ROW_TYPES.items() if name not in _SAME_FOR_ALL}


@lru_cache(maxsize=1)
def _record_rows() -> Any:
    """Where the database runs writes inside WITH: `record_rows` as one statement over
    column arrays. The observations are upserted; each (customer, metric) pair's newest row
    moves its current value forward (DISTINCT ON: one update per current row, taken in key
    order, so concurrent batches cannot deadlock)."""
    insert = upsert_insert("postgresql")
    rows = column_rows(_ARRAY_TYPES, "rows", _CONSTANT_TYPES)
    observations = insert(_obs).from_select(
        _ROW_COLUMNS, select(*(rows.c[c] for c in _ROW_COLUMNS))
    )
    observations = observations.on_conflict_do_update(
        index_elements=list(_obs.primary_key.columns),
        set_={c: observations.excluded[c] for c in _UPDATED},
    )
    newest = (
        select(*(rows.c[c] for c in _ROW_COLUMNS))
        .ext(first_per(rows.c.customer_ref, rows.c.metric_ref))
        .order_by(rows.c.customer_ref, rows.c.metric_ref, rows.c.observed_at.desc())
    )
    current = insert(_cur).from_select(_ROW_COLUMNS, newest)
    current = current.on_conflict_do_update(
        index_elements=list(_cur.primary_key.columns),
        set_={c: current.excluded[c] for c in (*_UPDATED, "observed_at")},
        where=_cur.c.observed_at <= current.excluded.observed_at,
    )
    # The observations are the main statement and the current values a WITH part that
    # nothing reads, which PostgreSQL runs after the main statement: the current-value rows,
    # which concurrent batches for the same customers contend on, stay locked only from then
    # to the commit, not through the whole batch's inserts. The rollup marks come last, in
    # key order too.
    return observations.add_cte(current.cte("moved"), _marks(rows, "postgresql").cte("marked"))


def _marks(rows: Any, dialect_name: str) -> Any:
    """`mark_changed` for each (customer, metric) pair of `rows`, from its earliest row."""
    pair = (rows.c.organization_id, rows.c.metric_ref, rows.c.customer_ref)
    source = (
        select(*pair, func.min(rows.c.observed_at)).where(true()).group_by(*pair).order_by(*pair)
    )
    return mark_changed(source, dialect_name)


def _live_values() -> Any:
    """Current values with their metric, non-archived metrics only: what the view shows."""
    return _cur.join(
        _metrics,
        and_(
            _metrics.c.organization_id == _cur.c.organization_id,
            _metrics.c.id == _cur.c.metric_ref,
            _metrics.c.archived.is_(False),
        ),
    )


def _current_view() -> Any:
    """The agent view: the customer (one row even without values) and each non-archived
    metric's current value, in one statement built once."""
    values = _live_values()
    return (
        select(
            _customers.c.id.label("customer_ref"),
            _metrics.c.id.label("metric_ref"),
            _metrics.c.key,
            _metrics.c.name,
            _metrics.c.data_type,
            _metrics.c.unit,
            _cur.c.observed_at,
            *(_cur.c[c] for c in VALUE_COLUMNS),
        )
        .select_from(
            _customers.outerjoin(
                values,
                and_(
                    _cur.c.organization_id == _customers.c.organization_id,
                    _cur.c.customer_ref == _customers.c.id,
                ),
            )
        )
        .where(
            _customers.c.organization_id == bindparam("org"),
            _customers.c.customer_id == bindparam("customer_id"),
        )
        .order_by(_metrics.c.id)
    )


def _rendered_value() -> Any:
    by_type = {t: json_of(_cur.c[column]) for t, column in COLUMN_OF.items()}
    by_type["DATE"] = json_of(date_text(_cur.c.value_date))
    by_type["DATETIME"] = json_of(utc_text(_cur.c.value_datetime))
    return case(by_type, value=_metrics.c.data_type)


def _rendered_view() -> Any:
    """The agent view on PostgreSQL: the customer's row (none when there is no such customer)
    with the `data` array already rendered as JSON by the database, in the API's shapes
    (`value` as `typed.to_json` gives it, timestamps as `clock.format_timestamp`)."""
    data = json_array_of(
        [
            ("metric_id", json_of(literal("METRIC-") + zero_padded(_metrics.c.id, 3))),
            ("key", json_of(_metrics.c.key)),
            ("name", json_of(_metrics.c.name)),
            ("data_type", json_of(_metrics.c.data_type)),
            ("unit", json_of(_metrics.c.unit)),
            ("value", _rendered_value()),
            ("observed_at", json_of(utc_text(_cur.c.observed_at))),
        ],
        order_by=_metrics.c.id,
    )
    values = (
        select(data)
        .select_from(_live_values())
        .where(
            _cur.c.organization_id == _customers.c.organization_id,
            _cur.c.customer_ref == _customers.c.id,
        )
        .scalar_subquery()
    )
    return select(_customers.c.id, values.label("data")).where(
        _customers.c.organization_id == bindparam("org"),
        _customers.c.customer_id == bindparam("customer_id"),
    )


def _checking_key(statement: Any) -> Any:
    return statement.where(
        key_still_active(bindparam("org"), bindparam("key_hash", type_=String()))
    )


_CURRENT_VIEW = _current_view()
_CURRENT_VIEW_CHECKING_KEY = _checking_key(_current_view())
_RENDERED_VIEW = _rendered_view()
_RENDERED_VIEW_CHECKING_KEY = _checking_key(_rendered_view())


@lru_cache(maxsize=16)
def _record_rows_json(present: tuple[str, ...]) -> tuple[Any, Any, Any]:
    """`_record_rows` where writes cannot share a statement (SQLite): three statements over
    one JSON text of the rows (`json_rows`, holding the columns `present`; the others are
    NULL), each run by SQLite over every row at once: the observation upsert, the
    current-value upsert from each (customer, metric) pair's newest row, and the rollup
    marks from each pair's earliest row."""
    insert = upsert_insert("sqlite")
    rows = json_rows({c: _ROW_TYPES[c] for c in present}, "rows", _CONSTANT_TYPES)
    fields = [rows.c[c] if c in rows.c else null().label(c) for c in _ROW_COLUMNS]
    # SQLite needs a WHERE before ON CONFLICT after a FROM (a parsing ambiguity).
    observations = insert(_obs).from_select(_ROW_COLUMNS, select(*fields).where(true()))
    observations = observations.on_conflict_do_update(
        index_elements=list(_obs.primary_key.columns),
        set_={c: observations.excluded[c] for c in _UPDATED},
    )
    # With max() the only aggregate, SQLite takes the row's other (bare) columns from the
    # row holding the maximum: each pair's newest row (observed_at is fixed-width text).
    newest = [
        func.max(f).label(c) if c == "observed_at" else f
        for c, f in zip(_ROW_COLUMNS, fields, strict=True)
    ]
    pair = (rows.c.customer_ref, rows.c.metric_ref)
    current = insert(_cur).from_select(_ROW_COLUMNS, select(*newest).where(true()).group_by(*pair))
    current = current.on_conflict_do_update(
        index_elements=list(_cur.primary_key.columns),
        set_={c: current.excluded[c] for c in (*_UPDATED, "observed_at")},
        where=_cur.c.observed_at <= current.excluded.observed_at,
    )
    return observations, current, _marks(rows, "sqlite")


_REF_BY_CUSTOMER_ID = select(_customers.c.id).where(
    _customers.c.organization_id == bindparam("org"),
    _customers.c.customer_id == bindparam("customer_id"),
)


def _current_row(r: Any) -> CurrentRow:
    # Only the metric's own value column: the agent view makes 50 of these per request.
    value = getattr(r, COLUMN_OF[r.data_type])
    return CurrentRow(r.metric_ref, r.key, r.name, r.data_type, r.unit, r.observed_at, value)


def _stored(row: Any) -> StoredObservation:
    return StoredObservation(row.observed_at, row.recorded_at, row.source, _values(row))


class ValueRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._session = session
        self._conn = session.connection
        self._org = tenant.organization_id
        self._tenant = tenant

    @property
    def key_checked(self) -> bool:
        return self._tenant.key_checked

    def _pair(self, table: Any, customer_ref: int, metric_ref: int) -> ColumnElement[bool]:
        return and_(
            table.c.organization_id == self._org,
            table.c.customer_ref == customer_ref,
            table.c.metric_ref == metric_ref,
        )

    async def record(
        self, customer_ref: int, metric_ref: int, observation: StoredObservation
    ) -> None:
        """Stores an observation (replacing one at the same observed_at) and moves the current
        value forward when this observation is at least as new."""
        await self.record_rows(ObservationRows.of(customer_ref, metric_ref, observation))

    async def record_for_customer_id(
        self,
        customer_id: str,
        metric: MetricRow,
        observation: StoredObservation,
        metric_remembered: bool = False,
    ) -> bool:
        """`record` for the customer named by `customer_id`; False, with nothing stored, when
        the organization has no such customer. With a remembered key or metric (PostgreSQL),
        the statement checks both and raises StaleLookup, storing nothing, when one no
        longer holds; once it returns, both have been checked."""
        if not writes_in_ctes(self._conn.dialect.name):
            params = {"org": self._org, "customer_id": customer_id}
            ref = (await self._conn.execute(_REF_BY_CUSTOMER_ID, params)).scalar()
            if ref is None:
                return False
            await self.record(ref, metric.id, observation)
            return True
        check_key = not self._tenant.key_checked
        params = {
            "organization_id": self._org,
            "customer_id": customer_id,
            "metric_ref": metric.id,
            "observed_at": observation.observed_at,
            "recorded_at": observation.recorded_at,
            "source": observation.source,
            **observation.values,
        }
        if check_key:
            params["key_hash"] = self._tenant.key_hash
        if metric_remembered:
            params["metric_key"] = metric.key
            params["metric_data_type"] = metric.data_type
        async with self._session.own_transactions():
            row = (
                await self._conn.execute(
                    _record_by_customer_id(check_key, metric_remembered), params
                )
            ).one()
        if not row.fresh:
            raise StaleLookup()
        return row.customer_ref is not None

    async def record_rows(self, rows: ObservationRows) -> None:
        """Bulk `record`: every row's observation stored, and each (customer, metric) pair's
        current value moved forward to its newest row when that is at least as new."""
        await self.record_prepared(self.prepare_rows(rows))

    def prepare_rows(self, rows: ObservationRows) -> PreparedRows:
        """`record_rows` in two steps: the parameters, made in Python without the database
        (a batch makes them before its write transaction), then `record_prepared`."""
        if not rows.customer_refs:
            return PreparedRows((), {})
        columns: dict[str, list[Any] | None] = {
            "customer_ref": rows.customer_refs,
            "metric_ref": rows.metric_refs,
            "observed_at": rows.observed_at,
            "source": rows.sources,
            **rows.values,
        }
        constants = {"organization_id": self._org, "recorded_at": rows.recorded_at}
        if writes_in_ctes(self._conn.dialect.name):
            params = {**column_rows_params(_ARRAY_TYPES, columns), **constants}
            return PreparedRows((_record_rows(),), params)
        sent = {c: items for c, items in columns.items() if items is not None}
        present = tuple(c for c in _ARRAY_TYPES if c in sent)
        types = {c: _ARRAY_TYPES[c] for c in present}
        return PreparedRows(
            _record_rows_json(present), {**json_rows_params(types, sent), **constants}
        )

    async def record_prepared(
        self, prepared: PreparedRows, recorded_at: datetime | None = None
    ) -> None:
        """Stores rows `prepare_rows` made; `recorded_at` (when given) replaces theirs."""
        params = prepared.params
        if recorded_at is not None and params:
            params = {**params, "recorded_at": recorded_at}
        for statement in prepared.statements:
            await self._conn.execute(statement, params)

    async def current_for_update(
        self, customer_ref: int, metric_ref: int
    ) -> StoredObservation | None:
        """The current value, row-locked until the transaction ends (PostgreSQL; SQLite's
        write transactions are already exclusive)."""
        stmt = select(_cur).where(self._pair(_cur, customer_ref, metric_ref)).with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return _stored(row) if row else None

    async def claim_current(
        self, customer_ref: int, metric_ref: int, observation: StoredObservation
    ) -> bool:
        """Inserts the first current value unless one exists (waiting for a concurrent first
        writer to finish); True when this call created it."""
        insert = upsert_insert(self._conn.dialect.name)
        stmt = (
            insert(_cur)
            .values(
                organization_id=self._org,
                customer_ref=customer_ref,
                metric_ref=metric_ref,
                observed_at=observation.observed_at,
                recorded_at=observation.recorded_at,
                source=observation.source,
                **observation.values,
            )
            .on_conflict_do_nothing(index_elements=list(_cur.primary_key.columns))
            .returning(_cur.c.metric_ref)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def current_view(self, customer_id: str) -> list[CurrentRow] | RenderedView | None:
        """Every non-archived metric's current value for one customer, in one query; None when
        the customer does not exist. PostgreSQL renders the answer itself (RenderedView)."""
        params: dict[str, Any] = {"org": self._org, "customer_id": customer_id}
        checking = not self._tenant.key_checked
        if checking:  # a remembered key: no rows unless it is still active
            params["key_hash"] = self._tenant.key_hash
        if renders_json(self._conn.dialect.name):
            statement = _RENDERED_VIEW_CHECKING_KEY if checking else _RENDERED_VIEW
            row = (await self._conn.execute(statement, params)).first()
            return None if row is None else RenderedView(row.data or "[]")
        statement = _CURRENT_VIEW_CHECKING_KEY if checking else _CURRENT_VIEW
        rows = (await self._conn.execute(statement, params)).all()
        if not rows:
            return None
        return [_current_row(r) for r in rows if r.metric_ref is not None]

    async def as_of_view(self, customer_ref: int, as_of: datetime) -> list[CurrentRow]:
        """Each non-archived metric's latest observation at or before `as_of`: one index
        probe per metric, whatever the length of the history."""
        older = _obs.alias("older")
        latest = (
            select(func.max(older.c.observed_at))
            .where(
                older.c.organization_id == _metrics.c.organization_id,
                older.c.customer_ref == customer_ref,
                older.c.metric_ref == _metrics.c.id,
                older.c.observed_at <= as_of,
            )
            .correlate(_metrics)
            .scalar_subquery()
        )
        stmt = (
            select(
                _metrics.c.id.label("metric_ref"),
                _metrics.c.key,
                _metrics.c.name,
                _metrics.c.data_type,
                _metrics.c.unit,
                _obs.c.observed_at,
                *(_obs.c[c] for c in VALUE_COLUMNS),
            )
            .select_from(
                _metrics.join(
                    _obs,
                    and_(
                        _obs.c.organization_id == _metrics.c.organization_id,
                        _obs.c.customer_ref == customer_ref,
                        _obs.c.metric_ref == _metrics.c.id,
                        _obs.c.observed_at == latest,
                    ),
                )
            )
            .where(_metrics.c.organization_id == self._org, _metrics.c.archived.is_(False))
            .order_by(_metrics.c.id)
        )
        return [_current_row(r) for r in await self._conn.execute(stmt)]

    async def history(
        self,
        customer_ref: int,
        metric_ref: int,
        start: datetime | None,
        end: datetime | None,
        before: datetime | None,
        limit: int,
    ) -> list[StoredObservation]:
        stmt = (
            select(_obs)
            .where(self._pair(_obs, customer_ref, metric_ref))
            .order_by(_obs.c.observed_at.desc())
            .limit(limit)
        )
        if start is not None:
            stmt = stmt.where(_obs.c.observed_at >= start)
        if end is not None:
            stmt = stmt.where(_obs.c.observed_at < end)
        if before is not None:
            stmt = stmt.where(_obs.c.observed_at < before)
        return [_stored(r) for r in await self._conn.execute(stmt)]

    async def delete_range(
        self, customer_ref: int, metric_ref: int, start: datetime | None, end: datetime | None
    ) -> int:
        conditions = [self._pair(_obs, customer_ref, metric_ref)]
        if start is not None:
            conditions.append(_obs.c.observed_at >= start)
        if end is not None:
            conditions.append(_obs.c.observed_at < end)
        earliest = select(
            _obs.c.organization_id,
            _obs.c.metric_ref,
            _obs.c.customer_ref,
            func.min(_obs.c.observed_at).label("since"),
        ).where(*conditions)
        earliest = earliest.group_by(_obs.c.organization_id, _obs.c.metric_ref, _obs.c.customer_ref)
        await self._conn.execute(mark_changed(earliest, self._conn.dialect.name))
        deleted = (await self._conn.execute(delete(_obs).where(*conditions))).rowcount
        if deleted:
            await self._refresh_current(customer_ref, metric_ref)
        return deleted

    async def _refresh_current(self, customer_ref: int, metric_ref: int) -> None:
        """After observations were deleted: current = the latest one left, or none."""
        await self._conn.execute(delete(_cur).where(self._pair(_cur, customer_ref, metric_ref)))
        latest = (
            select(_obs)
            .where(self._pair(_obs, customer_ref, metric_ref))
            .order_by(_obs.c.observed_at.desc())
            .limit(1)
        )
        row = (await self._conn.execute(latest)).first()
        if row is not None:
            await self.record(customer_ref, metric_ref, _stored(row))

    async def usage(self, metric_ref: int) -> Usage:
        observations = select(func.count(), func.max(_obs.c.observed_at)).where(
            _obs.c.organization_id == self._org, _obs.c.metric_ref == metric_ref
        )
        count, last = (await self._conn.execute(observations)).one()
        customers = select(func.count()).where(
            _cur.c.organization_id == self._org, _cur.c.metric_ref == metric_ref
        )
        return Usage(int((await self._conn.execute(customers)).scalar_one()), int(count), last)

    async def metric_has_values(self, metric_ref: int) -> bool:
        stmt = (
            select(_obs.c.metric_ref)
            .where(_obs.c.organization_id == self._org, _obs.c.metric_ref == metric_ref)
            .limit(1)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def strings_in_use(self, metric_ref: int, candidates: list[str]) -> list[str]:
        stmt = (
            select(_obs.c.value_text)
            .where(
                _obs.c.organization_id == self._org,
                _obs.c.metric_ref == metric_ref,
                _obs.c.value_text.in_(candidates),
            )
            .distinct()
        )
        return sorted(r[0] for r in await self._conn.execute(stmt))

    async def delete_metric_values(self, metric_ref: int) -> None:
        for table in (_cur, _obs, *ROLLUP_TABLES):
            await self._conn.execute(
                delete(table).where(
                    table.c.organization_id == self._org, table.c.metric_ref == metric_ref
                )
            )
