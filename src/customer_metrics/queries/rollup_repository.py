"""The series rollup: per-15-minute totals of a metric (`metric_rollups`), the observations
they count (`metric_rollup_rows`), and the customers changed since (`metric_rollup_dirty`).

Writes only mark customers (values/repository.py `mark_changed`). `fold` moves the marked
customers' changes into the totals; `bucket_totals` reads the totals and adds the changes
not folded yet, in one statement (one snapshot), so answers are exact whenever folds run."""

from __future__ import annotations

import asyncio
import bisect
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
)

from customer_metrics.queries.buckets import Bucket
from customer_metrics.queries.rollup import PERIOD, Totals, changes, exact, number, period_of
from customer_metrics.storage import dialect
from customer_metrics.storage.database import Session
from customer_metrics.storage.models import (
    Counter,
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
_counters = table_of(Counter)
_MARK_COLUMNS = (_dirty.c.metric_ref, _dirty.c.customer_ref, _dirty.c.since, _dirty.c.version)
_FOLD_COUNTER = "fold"  # SQLite: bumped by every fold that writes (`_take_turn`)
_FOLDS = select(_counters.c.value).where(
    _counters.c.organization_id == bindparam("org"), _counters.c.name == _FOLD_COUNTER
)

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


def _start(table: Any, pairs: Any, org: Any) -> Any:
    """Where `table`'s rows of each marked pair are read from: its last row before `since`
    (the value the first change is a difference from), or `since` when there is none."""
    older = table.alias("older")
    before = (
        select(func.max(older.c.observed_at))
        .where(
            older.c.organization_id == org,
            older.c.metric_ref == pairs.c.metric_ref,
            older.c.customer_ref == pairs.c.customer_ref,
            older.c.observed_at < pairs.c.since,
        )
        .scalar_subquery()
    )
    return func.coalesce(before, pairs.c.since)


def _since_rows(table: Any, source: int, value: list[Any], pairs: Any, org: Any) -> Any:
    """`table`'s rows of each marked pair from its last row before `since` on, labelled
    `source`: (source, metric_ref, customer_ref, since, observed_at, number, integer)."""
    return select(
        literal(source).label("source"),
        pairs.c.metric_ref,
        pairs.c.customer_ref,
        pairs.c.since,
        table.c.observed_at,
        *value,
    ).join_from(pairs, table, _pair_rows(table, pairs, org, _start(table, pairs, org)))


def _pair_rows(table: Any, pairs: Any, org: Any, start: Any) -> Any:
    """Joins `table`'s rows of each pair of `pairs` (metric_ref, customer_ref) from `start` on."""
    return and_(
        table.c.organization_id == org,
        table.c.metric_ref == pairs.c.metric_ref,
        table.c.customer_ref == pairs.c.customer_ref,
        table.c.observed_at >= start,
    )


def _rows_per_pair(
    table: Any, source: int, value: list[Any], marked: Any, start: Any, org: Any
) -> Any:
    """PostgreSQL: `_since_rows`, read pair by pair from `start` (a column of `marked`
    holding `_start`): an index range scan per marked pair, whatever the planner guesses.
    Joined instead, a few thousand pairs can look cheaper to it as a scan of all of the
    organization's rows, which grows with its history, not with what changed."""
    mine = select(table.c.observed_at, *value).where(
        table.c.organization_id == org,
        table.c.metric_ref == marked.c.metric_ref,
        table.c.customer_ref == marked.c.customer_ref,
        table.c.observed_at >= start,
    )
    rows = dialect.per_row(mine, "postgresql").lateral(f"{table.name}_since")
    return select(
        literal(source).label("source"),
        marked.c.metric_ref,
        marked.c.customer_ref,
        marked.c.since,
        *rows.c,
    ).join_from(marked, rows, true())


def _changed_rows(pairs: Any, org: Any) -> list[Any]:
    """The observations and the counted rows of the marked pairs (see `_since_rows`)."""
    truth = _since_rows(_obs, _TRUTH, [_obs.c.value_number, _obs.c.value_integer], pairs, org)
    counted = _since_rows(
        _rows, _COUNTED, [_rows.c.value, _none(BigInteger()).label("value_integer")], pairs, org
    )
    return [truth, counted]


class RollupRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._session = session
        self._conn = session.connection
        self._org = tenant.organization_id
        self._dialect = self._conn.dialect.name

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
        truth, counted = (s.add_columns(*pad) for s in _changed_rows(pairs, self._org))
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
        """Moves up to `limit` marked customers' changes into the totals, in one write
        transaction; the number folded (0 when another fold of this organization is under
        way, or overtook this one)."""
        if not dialect.writes_in_ctes(self._dialect):
            return await self._fold_here(limit)
        # PostgreSQL: the whole batch is one statement; the worker only starts it.
        await self._session.begin_transaction()
        lock = dialect.fold_lock(self._org, self._dialect)
        if lock is not None and not (await self._conn.execute(lock)).scalar():
            return 0
        params = {"organization_id": self._org, "limit": limit}
        return int((await self._conn.execute(_fold_statement(), params)).scalar_one())

    async def _fold_here(self, limit: int) -> int:
        """SQLite: the marks and rows are read and the differences computed here, before the
        write transaction (a read transaction takes no lock: writers go on meanwhile). In it,
        the customers whose mark is unchanged are folded as computed; those written since
        are read and computed again, under the lock, so that every fold moves on however
        often its customers are written. The `fold` counter, read first and bumped in the
        write transaction, makes a fold that another fold of the organization overtook
        (another worker's) fold nothing."""
        started = int((await self._conn.execute(_FOLDS, {"org": self._org})).scalar() or 0)
        chosen = (
            select(*_MARK_COLUMNS)
            .where(_dirty.c.organization_id == self._org)
            .order_by(_dirty.c.metric_ref, _dirty.c.customer_ref)
            .limit(limit)
        )
        marks = list((await self._conn.execute(chosen)).all())
        if not marks:
            return 0
        changed = await _changes_per_pair(marks, await self._rows_since(marks))
        await self._session.begin_transaction()
        if not await self._take_turn(started):
            return 0
        taken = await self._take_marks(marks)
        again: list[Any] = []
        if len(taken) < len(marks):  # written meanwhile: their marks as they are now
            done = set(taken)
            left = [(m[0], m[1]) for m in marks if (m[0], m[1]) not in done]
            again = await self._marks_of(left)
            changed.update(await _changes_per_pair(again, await self._rows_since(again)))
            taken += await self._take_marks(again)
        deltas: dict[tuple[int, datetime], Totals] = defaultdict(Totals)
        with exact():
            for pair in taken:
                for key, totals in changed[pair]:
                    deltas[key].add(totals)
            await self._apply_totals(deltas)
        read = {(m[0], m[1]): m for m in (*marks, *again)}  # again: the marks computed last
        await self._count_rows([read[pair] for pair in taken])
        return len(taken)

    async def _marks_of(self, pairs: list[Pair]) -> list[Any]:
        """The marks of these (metric, customer) pairs that are there, as `_fold_here` reads
        them."""
        key = tuple_(_dirty.c.metric_ref, _dirty.c.customer_ref)
        marks: list[Any] = []
        for chunk in dialect.chunks(pairs, 500):
            stmt = select(*_MARK_COLUMNS).where(
                _dirty.c.organization_id == self._org, key.in_(chunk)
            )
            marks += (await self._conn.execute(stmt)).all()
        return marks

    async def _rows_since(self, marks: list[Any]) -> dict[Pair, list[Any]]:
        """Each marked pair's rows (observations and counted rows) from its `since` on, with
        the one before."""
        columns = {
            "metric_ref": [m[0] for m in marks],
            "customer_ref": [m[1] for m in marks],
            "since": [m[2] for m in marks],
        }
        pairs = dialect.json_rows(_PAIR_TYPES, "marked")
        both = union_all(*_changed_rows(pairs, self._org)).subquery("changed")
        # Each row's pair's `since` is the mark's: not read back (and converted) per row.
        stmt = select(*(c for c in both.c if c.name != "since"))
        params = dialect.json_rows_params(_PAIR_TYPES, columns)
        found: dict[Pair, list[Any]] = defaultdict(list)
        for row in await self._conn.execute(stmt, params):
            found[(int(row[1]), int(row[2]))].append(row)
        return found

    async def _take_turn(self, started: int) -> bool:
        """Bumps the organization's `fold` counter from the value read when this fold began;
        False when another fold bumped it since (and folded what this one read)."""
        insert = dialect.upsert_insert(self._dialect)
        stmt = (
            insert(_counters)
            .values(organization_id=self._org, name=_FOLD_COUNTER, value=started + 1)
            .on_conflict_do_update(
                index_elements=[_counters.c.organization_id, _counters.c.name],
                set_={"value": _counters.c.value + 1},
                where=_counters.c.value == started,
            )
            .returning(_counters.c.value)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def _take_marks(self, marks: list[Any]) -> list[Pair]:
        """Removes the marks read that no write has marked again since; their pairs."""
        key = tuple_(_dirty.c.metric_ref, _dirty.c.customer_ref, _dirty.c.version)
        taken: list[Pair] = []
        for chunk in dialect.chunks([(m[0], m[1], m[3]) for m in marks], 500):
            stmt = (
                delete(_dirty)
                .where(_dirty.c.organization_id == self._org, key.in_(chunk))
                .returning(_dirty.c.metric_ref, _dirty.c.customer_ref)
            )
            taken += [(int(r[0]), int(r[1])) for r in await self._conn.execute(stmt)]
        return taken

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
        source = dialect.json_rows(_TOTAL_TYPES, "totals")
        stmt = insert(_totals).from_select(list(_TOTAL_TYPES), select(source).where(literal(True)))
        stmt = stmt.on_conflict_do_update(
            index_elements=list(_totals.primary_key.columns),
            set_={c: stmt.excluded[c] for c in ("obs_count", "obs_sum", "snap_count", "snap_sum")},
        )
        await self._conn.execute(stmt, dialect.json_rows_params(_TOTAL_TYPES, columns))

    async def _count_rows(self, marks: list[Any]) -> None:
        """The folded pairs' counted rows from `since` on become their observations from then
        on, as the totals now count them: copied in the database, under the write lock that
        kept them as they were read (a write since would have marked them again)."""
        if not marks:
            return
        columns = {
            "metric_ref": [m[0] for m in marks],
            "customer_ref": [m[1] for m in marks],
            "since": [m[2] for m in marks],
        }
        params = {
            **dialect.json_rows_params(_PAIR_TYPES, columns),
            "organization_id": self._org,
        }
        for statement in _counting(self._dialect):
            await self._conn.execute(statement, params)


@lru_cache(maxsize=2)
def _counting(dialect_name: str) -> tuple[Any, Any]:
    """SQLite's fold (`_count_rows`): removes the counted rows of the folded pairs, from
    their `since` on, that no observation has any more, then writes those observations'
    values where the counted rows lack or differ from them (the same text: both columns
    hold the canonical decimal; an INTEGER value is its digits)."""
    org = bindparam("organization_id", type_=_rows.c.organization_id.type)
    # Materialized: read first, pair by pair into the tables' keys. Inlined, the JSON rows
    # looked dearer to SQLite's planner than a scan of the organization's rows.
    pairs = dialect.json_rows(_PAIR_TYPES, "folded").prefix_with("MATERIALIZED")
    counted = _rows.alias("counted")
    observed = (
        select(_obs.c.observed_at)
        .where(
            _obs.c.organization_id == org,
            _obs.c.customer_ref == counted.c.customer_ref,
            _obs.c.metric_ref == counted.c.metric_ref,
            _obs.c.observed_at == counted.c.observed_at,
        )
        .exists()
    )
    gone = (
        select(counted.c.metric_ref, counted.c.customer_ref, counted.c.observed_at)
        .join_from(pairs, counted, _pair_rows(counted, pairs, org, pairs.c.since))
        .where(~observed)
    )
    key = tuple_(_rows.c.metric_ref, _rows.c.customer_ref, _rows.c.observed_at)
    drop = delete(_rows).where(_rows.c.organization_id == org, key.in_(gone))
    value = func.coalesce(_obs.c.value_number, cast(_obs.c.value_integer, Text()))
    now = select(org, _obs.c.metric_ref, _obs.c.customer_ref, _obs.c.observed_at, value)
    now = now.join_from(pairs, _obs, _pair_rows(_obs, pairs, org, pairs.c.since))
    now = now.where(true())  # (SQLite: ON CONFLICT after a join needs a WHERE to parse)
    insert = dialect.upsert_insert(dialect_name)
    put = insert(_rows).from_select(list(_ROW_TYPES), now)
    put = put.on_conflict_do_update(
        index_elements=list(_rows.primary_key.columns),
        set_={"value": put.excluded.value},
        where=_rows.c.value.is_distinct_from(put.excluded.value),
    )
    return drop, put


@lru_cache(maxsize=1)
def _fold_statement() -> Any:
    """PostgreSQL: `RollupRepository.fold` of one batch as one statement (data-modifying
    CTEs), doing what the Python fold (`_apply`, for SQLite) does with the rows it reads
    back: no row travels to the worker, which gets the number of marks folded. Parameters:
    `organization_id`, `limit`.

    Concurrency. One statement runs on one snapshot: the marks it reads, and the
    observations and counted rows it reads for them, are of the same moment, and a write
    marks in the transaction that writes its observations, so every change behind a mark
    read is seen. Marks are read, not locked: writers of the marked customers go on
    meanwhile. A write committed after the snapshot is not seen, but it bumped its mark's
    `version`; the DELETE of the marks finds that row changed since its snapshot, waits for
    the writer if it is still under way, and (READ COMMITTED) rechecks its condition on the
    row's newest version, where `version` no longer matches what was read: the mark stays,
    and the next fold takes those changes. A writer that marks after the DELETE took its
    row waits on it until the commit, then finds no mark and inserts a new one (its
    changes, not committed at the snapshot, are folded next time). The DELETE runs after
    every other write of the statement (its one-time gate counts what they returned), so
    marks, and the writers marking them again, are held only from then to the commit, not
    through the fold's reads and sums. The totals and `metric_rollup_rows` are written by
    folds only, one per organization at a time (`dialect.fold_lock`, held to the commit):
    two folds side by side would both add the same changes to the totals."""
    org = bindparam("organization_id", type_=BigInteger())
    insert = dialect.upsert_insert("postgresql")
    zero: Any = literal_column("0")
    one: Any = literal_column("1")
    # 1. Up to `limit` marks, in key order. Referenced thrice: PostgreSQL materializes it,
    #    so every part of the statement works on the same marks.
    chosen = (
        select(_dirty.c.metric_ref, _dirty.c.customer_ref, _dirty.c.since, _dirty.c.version)
        .where(_dirty.c.organization_id == org)
        .order_by(_dirty.c.metric_ref, _dirty.c.customer_ref)
        .limit(bindparam("limit", type_=BigInteger()))
        .cte("chosen")
    )
    # 2. Each marked pair's observations and counted rows from the last one before `since`
    #    on (where each starts is looked up once per pair), with the value before each in
    #    its own set (`rollup.changes` in Python).
    marked = select(
        *chosen.c,
        _start(_obs, chosen, org).label("truth_from"),
        _start(_rows, chosen, org).label("counted_from"),
    ).cte("marked")
    truth = [_obs.c.value_number, _obs.c.value_integer]
    counted = [_rows.c.value, _none(BigInteger()).label("value_integer")]
    found = union_all(
        _rows_per_pair(_obs, _TRUTH, truth, marked, marked.c.truth_from, org),
        _rows_per_pair(_rows, _COUNTED, counted, marked, marked.c.counted_from, org),
    ).subquery("found")
    value = func.coalesce(found.c.value_number, cast(found.c.value_integer, ExactDecimal()))
    in_set: dict[str, Any] = {
        "partition_by": [found.c.source, found.c.metric_ref, found.c.customer_ref],
        "order_by": found.c.observed_at,
    }
    stepped = select(
        found.c.source,
        found.c.metric_ref,
        found.c.customer_ref,
        found.c.observed_at,
        value.label("value"),
        func.lag(value).over(**in_set).label("previous"),
        func.lag(found.c.observed_at).over(**in_set).label("previous_at"),
        (found.c.observed_at >= found.c.since).label("changed"),
    ).cte("stepped")
    # 3. What each row from `since` on adds (+1: the observations now; -1: the rows the
    #    totals count), summed per metric and 15-minute period.
    sign = case((stepped.c.source == _TRUTH, one), else_=-one)
    amount = func.coalesce(stepped.c.value, zero)
    first = case((stepped.c.previous_at.is_(None), sign), else_=zero)
    change = (
        select(
            stepped.c.metric_ref,
            dialect.epoch_period(stepped.c.observed_at, int(PERIOD.total_seconds())).label(
                "period_start"
            ),
            sign.label("sign"),
            (sign * amount).label("obs_sum"),
            first.label("snap_count"),
            (sign * (amount - func.coalesce(stepped.c.previous, zero))).label("snap_sum"),
        )
        .where(stepped.c.changed)
        .subquery("change")
    )
    deltas = select(
        org,
        change.c.metric_ref,
        change.c.period_start,
        func.sum(change.c.sign),
        func.sum(change.c.obs_sum),
        func.sum(change.c.snap_count),
        func.sum(change.c.snap_sum),
    ).group_by(change.c.metric_ref, change.c.period_start)
    # 4. Added to the totals there (exact NUMERIC; a missing sum counts as 0).
    totals = insert(_totals).from_select(list(_TOTAL_TYPES), deltas)
    totals = totals.on_conflict_do_update(
        index_elements=list(_totals.primary_key.columns),
        set_={
            **{c: _totals.c[c] + totals.excluded[c] for c in ("obs_count", "snap_count")},
            **{
                c: func.coalesce(_totals.c[c], zero) + totals.excluded[c]
                for c in ("obs_sum", "snap_sum")
            },
        },
    ).returning(_totals.c.period_start)
    added = totals.cte("added")
    # 5. `metric_rollup_rows` brought in step from `since` on: per moment of a marked pair,
    #    whether it holds an observation and a counted row, and their values (grouped, not
    #    joined: the planner cannot tell how many rows `stepped` holds, and a nested loop
    #    over two of its scans is quadratic). A counted row whose observation is gone is
    #    deleted; an observation not counted yet, or counted with another value, is
    #    written. Disjoint: no row is touched twice.
    is_truth, is_counted = stepped.c.source == _TRUTH, stepped.c.source == _COUNTED
    compared = (
        select(
            stepped.c.metric_ref,
            stepped.c.customer_ref,
            stepped.c.observed_at,
            func.bool_or(is_truth).label("observed"),
            func.bool_or(is_counted).label("counted"),
            func.max(stepped.c.value).filter(is_truth).label("value"),
            func.max(stepped.c.value).filter(is_counted).label("counted_value"),
        )
        .where(stepped.c.changed)
        .group_by(stepped.c.metric_ref, stepped.c.customer_ref, stepped.c.observed_at)
        .cte("compared")
    )
    key = ("metric_ref", "customer_ref", "observed_at")
    dropped = (
        delete(_rows)
        .where(
            _rows.c.organization_id == org,
            *(_rows.c[c] == compared.c[c] for c in key),
            compared.c.counted,
            ~compared.c.observed,
        )
        .returning(_rows.c.observed_at)
        .cte("dropped")
    )
    fresh = select(org, *(compared.c[c] for c in key), compared.c.value).where(
        compared.c.observed,
        or_(~compared.c.counted, compared.c.value.is_distinct_from(compared.c.counted_value)),
    )
    counted_now = insert(_rows).from_select(list(_ROW_TYPES), fresh)
    counted_now = counted_now.on_conflict_do_update(
        index_elements=list(_rows.primary_key.columns),
        set_={"value": counted_now.excluded.value},
    ).returning(_rows.c.observed_at)
    put = counted_now.cte("put")
    # 6. The marks read, unless a writer marked them again since (their version moved on).
    #    The gate, a condition on no row, is evaluated once before the first row is read: it
    #    runs the writes above to completion first (see the docstring).
    added_n, dropped_n, put_n = (
        select(func.count()).select_from(part).scalar_subquery() for part in (added, dropped, put)
    )
    unmarked = delete(_dirty).where(
        _dirty.c.organization_id == org,
        _dirty.c.metric_ref == chosen.c.metric_ref,
        _dirty.c.customer_ref == chosen.c.customer_ref,
        _dirty.c.version == chosen.c.version,
        added_n + dropped_n + put_n >= zero,
    )
    # PostgreSQL runs every data-modifying part to completion, read or not. Planned for its
    # values and without JIT compilation, which its estimated cost would otherwise set off
    # (~60 ms a batch of 2,000 customers, more than it saves here).
    folded = select(func.count()).select_from(chosen)
    return dialect.analytic(folded.add_cte(added, dropped, put, unmarked.cte("unmarked")))


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


async def _changes_per_pair(
    marks: list[Any], found: dict[Pair, list[Any]]
) -> dict[Pair, list[tuple[tuple[int, datetime], Totals]]]:
    """Each marked pair's change of the totals, by (metric, period), from its rows as read
    (`_rows_since`: source, metric_ref, customer_ref, observed_at, number, integer); the
    event loop turns every few pairs (a fold reads up to 2,000 customers' rows, all their
    changes since the last)."""
    result: dict[Pair, list[tuple[tuple[int, datetime], Totals]]] = {}
    with exact():
        for n, (metric_ref, customer_ref, since, *_) in enumerate(marks):
            if n % 50 == 49:
                await asyncio.sleep(0)
            rows = found.get((metric_ref, customer_ref), [])
            truth = sorted((r[3], number(r[4], r[5])) for r in rows if r[0] == _TRUTH)
            counted = sorted((r[3], number(r[4], None)) for r in rows if r[0] == _COUNTED)
            periods = _per_period(truth, counted, since)
            result[(metric_ref, customer_ref)] = [
                ((metric_ref, period), totals) for period, totals in periods.items()
            ]
    return result


def _per_period(
    truth: list[tuple[datetime, Decimal | None]],
    counted: list[tuple[datetime, Decimal | None]],
    since: datetime,
) -> dict[datetime, Totals]:
    """One pair's change per period, from `since` on, as `changes` counts each row: what its
    observations add now less what the counted rows added (each list in time order). A
    customer's values between two folds mostly fall in one period: they are summed here,
    once per period, so the fold adds one total per pair and period, not one per value.
    Call inside `exact()`."""
    periods: dict[datetime, Totals] = {}
    start = end = since  # the period last found: [start, end)
    for sign, mine in ((1, truth), (-1, counted)):
        for observed_at, totals in changes(mine, since):
            if not start <= observed_at < end:
                start = period_of(observed_at)
                end = start + PERIOD
            into = periods.get(start)
            if into is None:
                into = periods[start] = Totals()
            into.add(totals, sign)
    return periods


def _pair_changes(rows: list[Any], since: datetime) -> list[tuple[int, datetime, Totals]]:
    """(sign, observed_at, totals) for one marked pair's rows: what its observations add
    now (+1) and what the counted rows added (-1), from `since` on."""
    result = []
    for source, sign in ((_TRUTH, 1), (_COUNTED, -1)):
        mine = sorted((r[4], number(r[5], r[6])) for r in rows if r[0] == source)
        result += [(sign, t, totals) for t, totals in changes(mine, since)]
    return result
