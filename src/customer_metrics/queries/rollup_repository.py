"""The series rollup: per-15-minute totals of a metric (`metric_rollups`), the observations
they count (`metric_rollup_rows`), and the customers changed since (`metric_rollup_dirty`).

Writes only mark customers (values/repository.py `mark_changed`). `fold` moves the marked
customers' changes into the totals; `bucket_totals` reads the totals and adds the changes
not folded yet, in one statement (one snapshot), so answers are exact whenever folds run."""

from __future__ import annotations

import bisect
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    and_,
    cast,
    delete,
    func,
    literal,
    null,
    select,
    tuple_,
    union_all,
)

from customer_metrics.queries.buckets import Bucket
from customer_metrics.queries.rollup import Totals, changes, exact, number, period_of
from customer_metrics.storage import dialect
from customer_metrics.storage.database import Session
from customer_metrics.storage.models import (
    Observation,
    Rollup,
    RollupDirty,
    RollupRow,
    table_of,
)
from customer_metrics.storage.types import ExactDecimal, UTCDateTime
from customer_metrics.tenancy import Tenant

_obs = table_of(Observation)
_totals = table_of(Rollup)
_rows = table_of(RollupRow)
_dirty = table_of(RollupDirty)

_TRUTH, _COUNTED, _TOTAL = 0, 1, 2
_PAIR_TYPES = {
    "metric_ref": _dirty.c.metric_ref.type,
    "customer_ref": _dirty.c.customer_ref.type,
    "since": _dirty.c.since.type,
}
_ROW_TYPES = {
    "organization_id": _rows.c.organization_id.type,
    "metric_ref": _rows.c.metric_ref.type,
    "customer_ref": _rows.c.customer_ref.type,
    "observed_at": _rows.c.observed_at.type,
    "value": _rows.c.value.type,
}
_TOTAL_TYPES = {
    "organization_id": _totals.c.organization_id.type,
    "metric_ref": _totals.c.metric_ref.type,
    "period_start": _totals.c.period_start.type,
    "obs_count": _totals.c.obs_count.type,
    "obs_sum": _totals.c.obs_sum.type,
    "snap_count": _totals.c.snap_count.type,
    "snap_sum": _totals.c.snap_sum.type,
}
Pair = tuple[int, int]  # (metric_ref, customer_ref)
# Customers folded per transaction: short transactions, and a bounded read per fold.
FOLD_BATCH = 2000


async def organizations_with_marks_unscoped(session: Session) -> list[int]:
    """Every organization with customers to fold (crossing tenants: on PostgreSQL through the
    owner's function, as row-level security hides other organizations' marks)."""
    conn = session.connection
    if dialect.crosses_tenants_through_functions(conn.dialect.name):
        stmt: Any = select(func.cm_rollup_marked_organizations())
    else:
        stmt = select(_dirty.c.organization_id).distinct()
    return [int(r[0]) for r in await conn.execute(stmt)]


class RollupRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._session = session
        self._conn = session.connection
        self._org = tenant.organization_id
        self._dialect = self._conn.dialect.name

    def _since_rows(self, table: Any, source: int, value: list[Any], pairs: Any) -> Any:
        """`table`'s rows of each marked pair from its last row before `since` on, labelled
        `source`: (source, metric_ref, customer_ref, since, observed_at, number, integer)."""
        older = table.alias("older")
        before = (
            select(func.max(older.c.observed_at))
            .where(
                older.c.organization_id == self._org,
                older.c.metric_ref == pairs.c.metric_ref,
                older.c.customer_ref == pairs.c.customer_ref,
                older.c.observed_at < pairs.c.since,
            )
            .scalar_subquery()
        )
        return select(
            literal(source).label("source"),
            pairs.c.metric_ref,
            pairs.c.customer_ref,
            pairs.c.since,
            table.c.observed_at,
            *value,
        ).join_from(
            pairs,
            table,
            and_(
                table.c.organization_id == self._org,
                table.c.metric_ref == pairs.c.metric_ref,
                table.c.customer_ref == pairs.c.customer_ref,
                table.c.observed_at >= func.coalesce(before, pairs.c.since),
            ),
        )

    def _changed_rows(self, pairs: Any) -> list[Any]:
        """The observations and the counted rows of the marked pairs (see `_since_rows`)."""
        truth = self._since_rows(_obs, _TRUTH, [_obs.c.value_number, _obs.c.value_integer], pairs)
        counted = self._since_rows(
            _rows, _COUNTED, [_rows.c.value, _none(BigInteger()).label("value_integer")], pairs
        )
        return [truth, counted]

    # -- reading ---------------------------------------------------------------------------

    async def bucket_totals(
        self, metric_ref: int, spans: list[Bucket], inside_only: bool
    ) -> dict[int, Totals]:
        """{bucket index (-1: before the first bucket): totals} of the metric's observations
        before the last end, with every bucket bound a period bound (`on_period_bounds`).
        `inside_only`: only the buckets themselves are needed (not what lies before)."""
        bounds = [b.start for b in spans] + [spans[-1].end]
        index = dialect.bucket_index(_totals.c.period_start, bounds, self._dialect)
        scope = [
            _totals.c.organization_id == self._org,
            _totals.c.metric_ref == metric_ref,
            _totals.c.period_start < bounds[-1],
        ]
        if inside_only:
            scope.append(_totals.c.period_start >= bounds[0])
        # In the order of the observations' columns in the union (number, integer); the
        # union's types are its first part's, which the totals part therefore is not.
        sums: list[Any] = [
            _totals.c.obs_sum,
            _totals.c.obs_count,
            _totals.c.snap_sum,
            _totals.c.snap_count,
        ]
        if self._dialect == "postgresql":  # exact NUMERIC sums; SQLite's are added below
            sums = [func.sum(c) for c in sums]
        totals = select(
            literal(_TOTAL).label("source"),
            index.label("metric_ref"),  # the union's second column: here the bucket index
            _none(BigInteger()).label("customer_ref"),
            _none(UTCDateTime()).label("since"),
            _none(UTCDateTime()).label("observed_at"),
            *sums,
        ).where(*scope)
        if self._dialect == "postgresql":
            totals = totals.group_by(index)
        pairs = (
            select(_dirty.c.metric_ref, _dirty.c.customer_ref, _dirty.c.since)
            .where(_dirty.c.organization_id == self._org, _dirty.c.metric_ref == metric_ref)
            .cte("marked")
        )
        pad = [_none(ExactDecimal()).label("snap_sum"), _none(BigInteger()).label("snap_count")]
        truth, counted = (s.add_columns(*pad) for s in self._changed_rows(pairs))
        stmt = union_all(truth, counted, totals)
        rows = (await self._conn.execute(dialect.analytic(stmt))).all()
        result: dict[int, Totals] = defaultdict(Totals)
        marked: dict[Pair, list[Any]] = defaultdict(list)
        with exact():
            for row in rows:
                if row[0] == _TOTAL:
                    result[int(row[1])].add(_from_sums(row[5:]))
                else:
                    marked[(int(row[1]), int(row[2]))].append(row)
            for found in marked.values():
                for sign, observed_at, totals_ in _pair_changes(found, found[0][3]):
                    at = bisect.bisect_right(bounds, observed_at) - 1
                    if at < len(spans):
                        result[at].add(totals_, sign)
        return result

    # -- folding ---------------------------------------------------------------------------

    async def fold(self, limit: int = FOLD_BATCH) -> int:
        """Moves up to `limit` marked customers' changes into the totals, in one transaction;
        the number folded (0 when another fold of this organization is under way)."""
        await self._session.begin_transaction()
        lock = dialect.fold_lock(self._org, self._dialect)  # SQLite: writers take turns anyway
        if lock is not None and not (await self._conn.execute(lock)).scalar():
            return 0
        # Read, not taken: writers of the marked customers go on meanwhile. The rows read
        # next are at least as new as every write whose mark was read (a write marks in its
        # own transaction); a write after that bumps its mark, which then stays.
        chosen = (
            select(_dirty.c.metric_ref, _dirty.c.customer_ref, _dirty.c.since, _dirty.c.version)
            .where(_dirty.c.organization_id == self._org)
            .order_by(_dirty.c.metric_ref, _dirty.c.customer_ref)
            .limit(limit)
        )
        marks = list((await self._conn.execute(chosen)).all())
        if not marks:
            return 0
        columns = {
            "metric_ref": [m[0] for m in marks],
            "customer_ref": [m[1] for m in marks],
            "since": [m[2] for m in marks],
        }
        pairs = dialect.portable_rows(_PAIR_TYPES, "marked", self._dialect)
        stmt = union_all(*self._changed_rows(pairs))
        params = dialect.portable_rows_params(_PAIR_TYPES, columns, self._dialect)
        found: dict[Pair, list[Any]] = defaultdict(list)
        for row in await self._conn.execute(stmt, params):
            found[(int(row[1]), int(row[2]))].append(row)
        await self._apply([m[:3] for m in marks], found)
        # Last, so the marks (and a writer marking one again) are held only until the commit.
        key = tuple_(_dirty.c.metric_ref, _dirty.c.customer_ref, _dirty.c.version)
        for chunk in dialect.chunks([(m[0], m[1], m[3]) for m in marks], 500):
            await self._conn.execute(
                delete(_dirty).where(_dirty.c.organization_id == self._org, key.in_(chunk))
            )
        return len(marks)

    async def _apply(self, marks: list[Any], found: dict[Pair, list[Any]]) -> None:
        deltas: dict[tuple[int, datetime], Totals] = defaultdict(Totals)
        put: list[tuple[int, int, datetime, Decimal | None]] = []
        drop: list[tuple[int, int, datetime]] = []
        with exact():
            for metric_ref, customer_ref, since in marks:
                rows = found.get((metric_ref, customer_ref), [])
                for sign, observed_at, totals in _pair_changes(rows, since):
                    deltas[(metric_ref, period_of(observed_at))].add(totals, sign)
                now = {r[4]: number(r[5], r[6]) for r in rows if r[0] == _TRUTH and r[4] >= since}
                was = {r[4]: number(r[5], None) for r in rows if r[0] == _COUNTED and r[4] >= since}
                put += [
                    (metric_ref, customer_ref, t, v)
                    for t, v in now.items()
                    if was.get(t, v) != v or t not in was
                ]
                drop += [(metric_ref, customer_ref, t) for t in was if t not in now]
            await self._apply_totals(deltas)
        await self._apply_rows(put, drop)

    async def _apply_totals(self, deltas: dict[tuple[int, datetime], Totals]) -> None:
        if not deltas:
            return
        keys = list(deltas)
        existing: dict[tuple[int, datetime], Totals] = {}
        for chunk in dialect.chunks(keys, 500):
            stmt = select(
                _totals.c.metric_ref,
                _totals.c.period_start,
                _totals.c.obs_sum,
                _totals.c.obs_count,
                _totals.c.snap_sum,
                _totals.c.snap_count,
            ).where(
                _totals.c.organization_id == self._org,
                tuple_(_totals.c.metric_ref, _totals.c.period_start).in_(chunk),
            )
            for r in await self._conn.execute(stmt):
                existing[(int(r[0]), r[1])] = _from_sums(r[2:])
        columns: dict[str, list[Any]] = {name: [] for name in _TOTAL_TYPES}
        for key in sorted(keys):
            totals = existing.get(key, Totals())
            totals.add(deltas[key])
            for name, value in zip(
                _TOTAL_TYPES,
                (
                    self._org,
                    *key,
                    totals.obs_count,
                    totals.obs_sum,
                    totals.snap_count,
                    totals.snap_sum,
                ),
                strict=True,
            ):
                columns[name].append(value)
        insert = dialect.upsert_insert(self._dialect)
        source = dialect.portable_rows(_TOTAL_TYPES, "totals", self._dialect)
        stmt = insert(_totals).from_select(list(_TOTAL_TYPES), select(source).where(literal(True)))
        stmt = stmt.on_conflict_do_update(
            index_elements=list(_totals.primary_key.columns),
            set_={c: stmt.excluded[c] for c in ("obs_count", "obs_sum", "snap_count", "snap_sum")},
        )
        await self._conn.execute(
            stmt, dialect.portable_rows_params(_TOTAL_TYPES, columns, self._dialect)
        )

    async def _apply_rows(
        self,
        put: list[tuple[int, int, datetime, Decimal | None]],
        drop: list[tuple[int, int, datetime]],
    ) -> None:
        if drop:
            key = tuple_(_rows.c.metric_ref, _rows.c.customer_ref, _rows.c.observed_at)
            for chunk in dialect.chunks(sorted(drop), 500):
                await self._conn.execute(
                    delete(_rows).where(_rows.c.organization_id == self._org, key.in_(chunk))
                )
        if not put:
            return
        put.sort()
        columns: dict[str, list[Any]] = {
            "organization_id": [self._org] * len(put),
            "metric_ref": [p[0] for p in put],
            "customer_ref": [p[1] for p in put],
            "observed_at": [p[2] for p in put],
            "value": [p[3] for p in put],
        }
        insert = dialect.upsert_insert(self._dialect)
        source = dialect.portable_rows(_ROW_TYPES, "counted", self._dialect)
        stmt = insert(_rows).from_select(list(_ROW_TYPES), select(source).where(literal(True)))
        stmt = stmt.on_conflict_do_update(
            index_elements=list(_rows.primary_key.columns), set_={"value": stmt.excluded.value}
        )
        await self._conn.execute(
            stmt, dialect.portable_rows_params(_ROW_TYPES, columns, self._dialect)
        )


def _none(type_: Any) -> Any:
    """A typed NULL: the parts of a UNION must agree on each column's type."""
    return cast(null(), type_)


def _from_sums(sums: Any) -> Totals:
    obs_sum, obs_count, snap_sum, snap_count = sums
    return Totals(
        int(obs_count or 0),
        Decimal(obs_sum or 0),
        int(snap_count or 0),
        Decimal(snap_sum or 0),
    )


def _pair_changes(rows: list[Any], since: datetime) -> list[tuple[int, datetime, Totals]]:
    """(sign, observed_at, totals) for one marked pair's rows: what its observations add
    now (+1) and what the counted rows added (-1), from `since` on."""
    result = []
    for source, sign in ((_TRUTH, 1), (_COUNTED, -1)):
        mine = sorted((r[4], number(r[5], r[6])) for r in rows if r[0] == source)
        result += [(sign, t, totals) for t, totals in changes(mine, since)]
    return result
