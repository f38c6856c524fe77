"""Property: search, summary and series agree with a plain-Python reference model over
random data, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customer_metrics.queries.fold import fold_once
from tests.builders import create_metric, create_org
from tests.conftest import api_client

CUSTOMERS = [f"c{i}" for i in range(6)]
PLANS = ["free", "pro", "team"]
BASE = datetime(2024, 1, 1, tzinfo=UTC)

values_of = st.fixed_dictionaries(
    {
        c: st.tuples(
            st.none() | st.integers(-50, 50), st.none() | st.sampled_from(PLANS), st.integers(0, 9)
        )
        for c in CUSTOMERS
    }
)
number_leaf = st.builds(
    lambda op, v, w: {
        "metric": "score",
        "op": op,
        "value": sorted([v, w]) if op == "between" else v,
    },
    st.sampled_from(["eq", "ne", "lt", "lte", "gt", "gte", "between"]),
    st.integers(-50, 50),
    st.integers(-50, 50),
)
plan_leaf = st.one_of(
    st.builds(
        lambda op, v: {"metric": "plan", "op": op, "value": v},
        st.sampled_from(["eq", "ne", "starts_with", "contains"]),
        st.sampled_from(["free", "pro", "t", "e"]),
    ),
    st.builds(
        lambda op, vs: {"metric": "plan", "op": op, "value": vs},
        st.sampled_from(["in", "not_in"]),
        st.lists(st.sampled_from(PLANS), min_size=1, max_size=2),
    ),
    st.builds(
        lambda op, m: {"metric": m, "op": op},
        st.sampled_from(["exists", "not_exists"]),
        st.sampled_from(["score", "plan"]),
    ),
)
field_leaf = st.one_of(
    st.builds(
        lambda op, v: {"field": "customer_id", "op": op, "value": v},
        st.sampled_from(["eq", "ne", "lt", "gte"]),
        st.sampled_from(CUSTOMERS),
    ),
    st.builds(
        lambda vs: {"field": "customer_id", "op": "in", "value": vs},
        st.lists(st.sampled_from(CUSTOMERS), min_size=1, max_size=3),
    ),
)
leaf = st.one_of(number_leaf, plan_leaf, field_leaf)
tree = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(lambda xs: {"and": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"or": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, children),
    ),
    max_leaves=6,
)


def holds(node, row, customer) -> bool:
    if "and" in node:
        return all(holds(n, row, customer) for n in node["and"])
    if "or" in node:
        return any(holds(n, row, customer) for n in node["or"])
    if "not" in node:
        return not holds(node["not"], row, customer)
    metric_value = row[0] if node.get("metric") == "score" else row[1]
    value = customer if "field" in node else metric_value
    op = node["op"]
    if op == "exists":
        return value is not None
    if op == "not_exists":
        return value is None
    if value is None:
        return False
    target = node.get("value")
    return {
        "eq": lambda: value == target,
        "ne": lambda: value != target,
        "lt": lambda: value < target,
        "lte": lambda: value <= target,
        "gt": lambda: value > target,
        "gte": lambda: value >= target,
        "between": lambda: target[0] <= value <= target[1],
        "in": lambda: value in target,
        "not_in": lambda: value not in target,
        "starts_with": lambda: value.startswith(target),
        "contains": lambda: target in value,
    }[op]()


async def _load(client, data):
    await create_metric(client, name="score", key="score", data_type="INTEGER")
    await create_metric(client, name="plan", key="plan", data_type="STRING")
    items = []
    for customer, (score, plan, day) in data.items():
        observed = (BASE + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if score is not None:
            items.append(
                {
                    "customer_id": customer,
                    "metric": "score",
                    "value": score,
                    "observed_at": observed,
                }
            )
            # an older value that must never show as current
            items.append(
                {
                    "customer_id": customer,
                    "metric": "score",
                    "value": 999,
                    "observed_at": "2023-01-01T00:00:00Z",
                }
            )
        if plan is not None:
            items.append(
                {"customer_id": customer, "metric": "plan", "value": plan, "observed_at": observed}
            )
    await client.put(f"/customers/{CUSTOMERS[0]}", json={})
    for customer in CUSTOMERS:
        await client.put(f"/customers/{customer}", json={})
    response = await client.post("/customers/metrics/values", json={"values": items})
    assert response.json()["rejected"] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=values_of, node=tree, direction=st.sampled_from(["asc", "desc"]))
async def test_search_agrees_with_the_model(app, data, node, direction):
    org = await create_org(app)
    async with api_client(app, org.api_key) as client:
        await _load(client, data)
        seen, cursor = [], None
        while True:
            body = {
                "filter": node,
                "sort": [{"metric": "score", "direction": direction}],
                "limit": 2,
                "count": True,
                "include": ["score"],
                **({"cursor": cursor} if cursor else {}),
            }
            response = await client.post("/customers/search", json=body)
            assert response.status_code == 200, response.text
            page = response.json()
            seen += [(h["customer_id"], h["metrics"]["score"]) for h in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
    matching = [c for c in CUSTOMERS if holds(node, data[c], c)]
    with_value = [c for c in matching if data[c][0] is not None]
    without = [c for c in matching if data[c][0] is None]
    ordered = sorted(
        with_value,
        key=lambda c: (data[c][0] if direction == "asc" else -data[c][0], CUSTOMERS.index(c)),
    )
    expected = [(c, data[c][0]) for c in ordered + without]
    assert seen == expected, node
    assert page["count"] == len(matching)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=values_of)
async def test_summary_and_snapshot_series_agree_with_the_model(app, data):
    org = await create_org(app)
    async with api_client(app, org.api_key) as client:
        await _load(client, data)
        summary = (await client.get("/customers/metrics/score/summary")).json(parse_float=Decimal)
        series = (
            await client.get(
                "/customers/metrics/score/series",
                params={
                    "from": "2024-01-01T00:00:00Z",
                    "to": "2024-01-11T00:00:00Z",
                    "agg": "snapshot_sum",
                },
            )
        ).json(parse_float=Decimal)
        plans = (await client.get("/customers/metrics/plan/summary")).json()
    scores = sorted(v[0] for v in data.values() if v[0] is not None)
    assert summary["count"] == len(scores)
    if scores:
        assert (summary["sum"], summary["min"], summary["max"]) == (
            sum(scores),
            scores[0],
            scores[-1],
        )
        h = (len(scores) - 1) * Decimal("0.9")
        low = int(h)
        high = min(low + 1, len(scores) - 1)
        p90 = scores[low] + (scores[high] - scores[low]) * (h - low)
        assert summary["p90"] == p90.quantize(Decimal("1e-12"))
    for day, point in enumerate(series["data"]):
        end = day + 1  # bucket end: midnight after `day`
        alive = [v[0] if v[2] < end else 999 for v in data.values() if v[0] is not None]
        assert point["count"] == len(alive)
        assert point["value"] == (sum(alive) if alive else None)
    counts: dict[str, int] = {}
    for _, plan, _ in data.values():
        if plan is not None:
            counts[plan] = counts.get(plan, 0) + 1
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert [(v["value"], v["count"]) for v in plans["values"]] == expected


SORT_KEYS = {"score": 0, "plan": 1}
sort_key = st.tuples(
    st.sampled_from(["score", "plan", "customer_id"]), st.sampled_from(["asc", "desc"])
)
sorts = st.lists(sort_key, min_size=1, max_size=3, unique_by=lambda k: k[0])


def _ordered(customers: list[str], data, sort) -> list[str]:
    """Successive stable sorts, least significant key first; missing values last both ways."""
    result = list(customers)  # by internal id: created in CUSTOMERS order
    for name, direction in reversed(sort):

        def value(c, name=name):
            return c if name == "customer_id" else data[c][SORT_KEYS[name]]

        present = [c for c in result if value(c) is not None]
        missing = [c for c in result if value(c) is None]
        present.sort(key=value, reverse=direction == "desc")  # stable either way
        result = present + missing
    return result


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=values_of, node=st.none() | tree, sort=sorts, limit=st.integers(1, 3))
async def test_search_by_several_keys_agrees_with_the_model(app, data, node, sort, limit):
    org = await create_org(app)
    async with api_client(app, org.api_key) as client:
        await _load(client, data)
        seen, cursor = [], None
        while True:
            body = {
                "sort": [
                    {"field": n, "direction": d}
                    if n == "customer_id"
                    else {"metric": n, "direction": d}
                    for n, d in sort
                ],
                "limit": limit,
                **({"filter": node} if node is not None else {}),
                **({"cursor": cursor} if cursor else {}),
            }
            response = await client.post("/customers/search", json=body)
            assert response.status_code == 200, response.text
            page = response.json()
            seen += [h["customer_id"] for h in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
    matching = [c for c in CUSTOMERS if node is None or holds(node, data[c], c)]
    assert seen == _ordered(matching, data, sort), (node, sort)


observations = st.lists(
    st.tuples(
        st.sampled_from(CUSTOMERS[:4]),
        st.integers(-3, 12),  # day, from 2024-01-01: some before the series, some after
        st.integers(0, 23),  # hour
        st.sampled_from([2**63 - 1, -(2**63), 2**62]) | st.integers(-5, 5),
    ),
    max_size=12,
    unique_by=lambda o: (o[0], o[1], o[2]),
)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=observations, tz=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]))
async def test_series_aggregates_agree_with_the_model(app, rows, tz):
    """Observation aggregates count what lies inside each bucket; snapshot aggregates each
    customer's latest value strictly before the bucket's end, including values written before
    the series starts (INTEGER values at the ends of 64 bits: sums and differences overflow)."""
    org = await create_org(app)
    tzinfo = ZoneInfo(tz)
    start = datetime(2024, 1, 1, tzinfo=tzinfo)
    async with api_client(app, org.api_key) as client:
        await create_metric(client, name="seats", key="seats", data_type="INTEGER")
        stamped = [(c, BASE + timedelta(days=d, hours=h), v) for c, d, h, v in rows]
        if stamped:
            items = [
                {"customer_id": c, "metric": "seats", "value": v, "observed_at": t.isoformat()}
                for c, t, v in stamped
            ]
            response = await client.post("/customers/metrics/values", json={"values": items})
            assert response.json()["rejected"] == 0
        params = {
            "from": start.isoformat(),
            "to": (start + timedelta(days=7)).isoformat(),
            "tz": tz,
        }
        answers = {}
        for agg in ("sum", "count", "min", "max", "avg", "snapshot_sum", "snapshot_count"):
            response = await client.get(
                "/customers/metrics/seats/series", params={**params, "agg": agg}
            )
            assert response.status_code == 200, response.text
            answers[agg] = response.json(parse_float=Decimal)["data"]
    for day in range(7):
        begin = datetime(2024, 1, 1 + day, tzinfo=tzinfo)
        end = datetime(2024, 1, 2 + day, tzinfo=tzinfo)
        inside = [v for _, t, v in stamped if begin <= t < end]
        assert answers["count"][day]["value"] == len(inside)
        assert answers["sum"][day]["value"] == (sum(inside) if inside else None)
        assert answers["min"][day]["value"] == (min(inside) if inside else None)
        assert answers["max"][day]["value"] == (max(inside) if inside else None)
        if inside:
            with localcontext() as context:
                context.prec = 80
                mean = (Decimal(sum(inside)) / len(inside)).quantize(Decimal("1e-12"))
            assert Decimal(answers["avg"][day]["value"]) == mean
        latest: dict[str, tuple[datetime, int]] = {}
        for c, t, v in stamped:
            if t < end and (c not in latest or latest[c][0] < t):
                latest[c] = (t, v)
        alive = [v for _, v in latest.values()]
        assert answers["snapshot_count"][day]["count"] == len(alive)
        assert answers["snapshot_count"][day]["value"] == len(alive)
        assert answers["snapshot_sum"][day]["value"] == (sum(alive) if alive else None)


# Operations on one NUMBER metric, every way observations change: batch and single writes
# (a write at an existing observed_at replaces it), range deletes, customer erasure, and
# folds of the series rollup between them, so answers mix folded and unfolded changes.
ROLLUP_START = datetime(2024, 3, 8)  # local midnight; New York's DST starts on 2024-03-10
moments = st.builds(
    lambda day, hour, minute: (
        datetime(2024, 3, 6, tzinfo=UTC) + timedelta(days=day, hours=hour, minutes=minute)
    ),
    st.integers(0, 8),
    st.integers(0, 23),
    st.sampled_from([0, 7, 30, 59]),
)
amounts = st.sampled_from(["0.5", "-3", "12345678901234567890123456789012345678", "7.25"]) | (
    st.integers(-20, 20).map(str)
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("batch"),
            st.lists(st.tuples(st.sampled_from(CUSTOMERS[:3]), moments, amounts), max_size=4),
        ),
        st.tuples(st.just("single"), st.sampled_from(CUSTOMERS[:3]), moments, amounts),
        st.tuples(st.just("delete"), st.sampled_from(CUSTOMERS[:3]), moments, moments),
        st.tuples(st.just("erase"), st.sampled_from(CUSTOMERS[:3])),
        st.tuples(st.just("fold")),
    ),
    max_size=10,
)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _apply(client, app, org, stored, operation) -> None:
    """Runs one operation through the API and on the model (`stored`: customer → {observed_at:
    value})."""
    kind = operation[0]
    if kind == "fold":
        await fold_once(app.state.database)  # what the server runs in the background
    elif kind == "erase":
        response = await client.delete(f"/customers/{operation[1]}")
        assert response.status_code in (204, 404), response.text
        stored.pop(operation[1], None)
    elif kind == "delete":
        customer, start, end = operation[1], *sorted(operation[2:])
        response = await client.delete(
            f"/customers/{customer}/metrics/arr/values",
            params={"from": _stamp(start), "to": _stamp(end)},
        )
        assert response.status_code in (200, 404), response.text
        mine = stored.get(customer, {})
        for moment in [t for t in mine if start <= t < end]:
            del mine[moment]
    else:
        writes = operation[1] if kind == "batch" else [operation[1:]]
        for customer, _, _ in writes:
            await client.put(f"/customers/{customer}", json={})
        if kind == "batch":
            latest = {(c, t): v for c, t, v in writes}  # one item per customer and moment
            items = [
                {"customer_id": c, "metric": "arr", "value": v, "observed_at": _stamp(t)}
                for (c, t), v in latest.items()
            ]
            response = await client.post("/customers/metrics/values", json={"values": items})
            assert response.status_code == 200, response.text
            assert response.json()["rejected"] == 0, response.text
        else:
            customer, moment, value = writes[0]
            response = await client.post(
                f"/customers/{customer}/metrics/arr/values",
                json={"value": value, "observed_at": _stamp(moment)},
            )
            assert response.status_code == 201, response.text
        for customer, moment, value in writes:
            stored.setdefault(customer, {})[moment] = Decimal(value)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=operations,
    tz=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"]),
    interval=st.sampled_from(["day", "hour"]),
)
async def test_rollup_series_agree_with_the_model_through_every_change(app, ops, tz, interval):
    """Series over every customer, read from the rollup (every bound here is on a 15-minute
    period), agree with the model after any mix of writes, replacements, range deletes,
    erasures and folds, and again once everything is folded."""
    org = await create_org(app)
    tzinfo = ZoneInfo(tz)
    start = ROLLUP_START.replace(tzinfo=tzinfo)
    end = start + (timedelta(days=4) if interval == "day" else timedelta(hours=30))
    stored: dict[str, dict[datetime, Decimal]] = {}
    async with api_client(app, org.api_key) as client:
        await create_metric(client, name="arr", key="arr", data_type="NUMBER")
        for operation in ops:
            await _apply(client, app, org, stored, operation)
        for _ in range(2):  # as it stands, then with everything folded
            params = {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "tz": tz,
                "interval": interval,
            }
            answers = {}
            for agg in ("sum", "count", "avg", "snapshot_sum", "snapshot_count", "snapshot_avg"):
                response = await client.get(
                    "/customers/metrics/arr/series", params={**params, "agg": agg}
                )
                assert response.status_code == 200, response.text
                answers[agg] = response.json(parse_float=Decimal)["data"]
            _check_against_model(answers, stored)
            # The summary's count and sum come from the same rollup (its latest snapshot).
            summary = await client.get("/customers/metrics/arr/summary")
            assert summary.status_code == 200, summary.text
            current = [mine[max(mine)] for mine in stored.values() if mine]
            body = summary.json(parse_float=Decimal)
            assert body["count"] == len(current)
            with localcontext() as context:
                context.prec = 120  # exact: the values run to 38 digits
                assert body["sum"] == (sum(current) if current else None)
            await fold_once(app.state.database)


def _check_against_model(answers, stored) -> None:
    with localcontext() as context:
        context.prec = 120
        for index, point in enumerate(answers["sum"]):
            begin = datetime.fromisoformat(point["start"].replace("Z", "+00:00"))
            finish = datetime.fromisoformat(point["end"].replace("Z", "+00:00"))
            inside = [v for mine in stored.values() for t, v in mine.items() if begin <= t < finish]
            assert answers["count"][index]["value"] == len(inside)
            assert point["count"] == len(inside)
            assert (Decimal(point["value"]) if inside else None) == (
                sum(inside) if inside else None
            )
            alive = [
                mine[max(t for t in mine if t < finish)]
                for mine in stored.values()
                if any(t < finish for t in mine)
            ]
            snap = answers["snapshot_sum"][index]
            assert snap["count"] == len(alive) == answers["snapshot_count"][index]["value"]
            assert (Decimal(snap["value"]) if alive else None) == (sum(alive) if alive else None)
            if alive:
                mean = (sum(alive) / len(alive)).quantize(Decimal("1e-12"))
                assert Decimal(answers["snapshot_avg"][index]["value"]) == mean
