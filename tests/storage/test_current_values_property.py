"""Property: after any sequence of writes, back-fills, replacements, range deletes and customer
erasures, the current value of every (customer, metric) is exactly its latest observation."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import create_metric, create_org
from tests.conftest import api_client

CUSTOMERS = ["a", "b"]
METRICS = ["m1", "m2"]


def _at(day: int) -> str:
    return f"2024-01-{day:02d}T00:00:00.000Z"


days = st.integers(min_value=1, max_value=6)
write = st.tuples(
    st.just("write"),
    st.sampled_from(CUSTOMERS),
    st.sampled_from(METRICS),
    days,
    st.integers(-1000, 1000),
)
delete = st.tuples(
    st.just("delete"),
    st.sampled_from(CUSTOMERS),
    st.sampled_from(METRICS),
    st.none() | days,
    st.none() | days,
)
erase = st.tuples(st.just("erase"), st.sampled_from(CUSTOMERS))
# Several writes in one batch request: repeats of a (customer, metric, day) inside it included.
batch = st.tuples(st.just("batch"), st.lists(write, min_size=1, max_size=8))
operations = st.lists(st.one_of(write, write, delete, erase, batch), min_size=1, max_size=14)


def apply(model: dict, op: tuple) -> None:
    kind = op[0]
    if kind == "batch":  # the later of two items for one observation wins
        for item in op[1]:
            apply(model, item)
    elif kind == "write":
        _, customer, metric, day, value = op
        model.setdefault((customer, metric), {})[day] = value
    elif kind == "delete":
        _, customer, metric, start, end = op
        history = model.get((customer, metric), {})
        for day in [
            d for d in history if (start is None or d >= start) and (end is None or d < end)
        ]:
            del history[day]
    else:
        for key in [k for k in model if k[0] == op[1]]:
            del model[key]


async def perform(client, op: tuple) -> None:
    kind = op[0]
    if kind == "batch":
        items = [
            {"customer_id": customer, "metric": metric, "value": value, "observed_at": _at(day)}
            for _, customer, metric, day, value in op[1]
        ]
        response = await client.post("/customers/metrics/values", json={"values": items})
        assert response.json() == {"accepted": len(items), "rejected": 0, "errors": []}
    elif kind == "write":
        _, customer, metric, day, value = op
        response = await client.post(
            f"/customers/{customer}/metrics/{metric}/values",
            json={"value": value, "observed_at": _at(day)},
        )
        assert response.status_code == 201, response.text
    elif kind == "delete":
        _, customer, metric, start, end = op
        params = {k: _at(v) for k, v in (("from", start), ("to", end)) if v is not None}
        response = await client.delete(
            f"/customers/{customer}/metrics/{metric}/values", params=params
        )
        assert response.status_code in (200, 404), response.text
    else:
        response = await client.delete(f"/customers/{op[1]}")
        assert response.status_code in (204, 404)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=operations)
async def test_current_values_always_equal_latest_observation(app, ops):
    org = await create_org(app)
    model: dict = {}
    async with api_client(app, org.api_key) as client:
        for metric in METRICS:
            await create_metric(client, name=metric, key=metric)
        for op in ops:
            apply(model, op)
            await perform(client, op)
        for customer in CUSTOMERS:
            view = await client.get(f"/customers/{customer}/metrics")
            expected = {
                metric: history[max(history)]
                for (c, metric), history in model.items()
                if c == customer and history
            }
            actual = (
                {row["key"]: row["value"] for row in view.json()["data"]}
                if view.status_code == 200
                else {}
            )
            assert actual == expected, (customer, ops)
            for metric in METRICS:
                history = model.get((customer, metric), {})
                listed = await client.get(f"/customers/{customer}/metrics/{metric}/values")
                values = (
                    [r["value"] for r in listed.json()["data"]] if listed.status_code == 200 else []
                )
                assert values == [history[d] for d in sorted(history, reverse=True)], (
                    customer,
                    metric,
                    ops,
                )
