"""Summaries across customers (contract §5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from customer_metrics.queries.summary import SummaryService
from customer_metrics.queries.summary_repository import SummaryRepository
from tests.builders import create_metric, write_value


def _percentile(values: list[Decimal], p: Decimal) -> Decimal:
    ordered = sorted(values)
    h = (len(ordered) - 1) * p
    low = int(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (h - low)


async def test_numeric_summary_matches_a_reference(client):
    await create_metric(client, name="ARR")
    raw = ["100.50", "20", "3000.25", "0.1", "999", "42", "7.77"]
    for i, value in enumerate(raw):
        await write_value(client, f"c{i}", "arr", value=value)
    await write_value(client, "c0", "arr", value="1", observed_at="2020-01-01T00:00:00Z")  # older
    response = await client.get("/customers/metrics/arr/summary")
    assert response.status_code == 200
    body = response.json(parse_float=Decimal)
    values = [Decimal(v) for v in raw]
    assert body["metric_id"] == "METRIC-001"
    assert body["data_type"] == "NUMBER"
    assert body["count"] == 7
    assert body["sum"] == sum(values)
    assert body["min"] == min(values)
    assert body["max"] == max(values)
    assert body["avg"] == (sum(values) / 7).quantize(Decimal("1e-12"))
    for name, p in (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99")):
        assert body[name] == _percentile(values, Decimal(p)).quantize(Decimal("1e-12")), name


async def test_empty_numeric_summary_has_nulls(client):
    await create_metric(client, name="Seats", data_type="INTEGER")
    body = (await client.get("/customers/metrics/seats/summary")).json()
    assert body["count"] == 0
    for name in ("sum", "min", "max", "avg", "p50", "p90", "p99"):
        assert body[name] is None


async def test_integer_summary_and_as_of(client):
    await create_metric(client, name="Seats", data_type="INTEGER")
    await write_value(client, "a", "seats", value=10, observed_at="2024-01-01T00:00:00Z")
    await write_value(client, "a", "seats", value=30, observed_at="2024-03-01T00:00:00Z")
    await write_value(client, "b", "seats", value=5, observed_at="2024-02-01T00:00:00Z")
    now = (await client.get("/customers/metrics/seats/summary")).json()
    assert (now["count"], now["sum"], now["min"], now["max"]) == (2, 35, 5, 30)
    then = (
        await client.get(
            "/customers/metrics/seats/summary", params={"as_of": "2024-02-15T00:00:00Z"}
        )
    ).json()
    assert (then["count"], then["sum"], then["min"], then["max"]) == (2, 15, 5, 10)
    assert then["as_of"] == "2024-02-15T00:00:00.000Z"
    early = (
        await client.get(
            "/customers/metrics/seats/summary", params={"as_of": "2024-01-15T00:00:00Z"}
        )
    ).json()
    assert (early["count"], early["sum"]) == (1, 10)
    assert early["p50"] == 10


async def test_string_summary_counts_most_frequent_first_ties_by_value(client):
    await create_metric(client, name="Plan", data_type="STRING")
    plans = ["pro", "free", "pro", "Enterprise", "free", "basic", "pro"]
    for i, plan in enumerate(plans):
        await write_value(client, f"c{i}", "plan", value=plan)
    body = (await client.get("/customers/metrics/plan/summary")).json()
    assert body["count"] == 7
    assert body["values"] == [
        {"value": "pro", "count": 3},
        {"value": "free", "count": 2},
        {"value": "Enterprise", "count": 1},
        {"value": "basic", "count": 1},
    ]


async def test_boolean_and_date_summaries(client):
    await create_metric(client, name="Active", data_type="BOOLEAN")
    await create_metric(client, name="Renewal", data_type="DATE")
    for i, (active, renewal) in enumerate(
        [(True, "2025-01-01"), (False, "2024-06-30"), (True, "2026-02-28")]
    ):
        await write_value(client, f"c{i}", "active", value=active)
        await write_value(client, f"c{i}", "renewal", value=renewal)
    active = (await client.get("/customers/metrics/active/summary")).json()
    assert active["values"] == [{"value": True, "count": 2}, {"value": False, "count": 1}]
    renewal = (await client.get("/customers/metrics/renewal/summary")).json()
    assert (renewal["min"], renewal["max"], renewal["count"]) == ("2024-06-30", "2026-02-28", 3)


@pytest.mark.parametrize("params", [{"as_of": "yesterday"}, {"as_of": "2024-01-01T00:00:00"}])
async def test_bad_as_of_is_422(client, params):
    await create_metric(client, name="ARR")
    response = await client.get("/customers/metrics/arr/summary", params=params)
    assert response.status_code == 422


async def test_summary_of_unknown_metric_is_404(client):
    assert (await client.get("/customers/metrics/nope/summary")).status_code == 404


async def test_integer_summary_is_exact_past_64_bits_and_ranks_from_both_ends(client):
    await create_metric(client, name="Seats", data_type="INTEGER")
    # 203 values, written out of order, with ties: percentiles near either end are read
    # from the nearer end of the value index.
    values = [(i * 37) % 101 for i in range(200)] + [2**63 - 1, 2**63 - 1, -(2**63)]
    items = [{"customer_id": f"c{i}", "metric": "seats", "value": v} for i, v in enumerate(values)]
    response = await client.post("/customers/metrics/values", json={"values": items})
    assert response.json()["rejected"] == 0
    body = (await client.get("/customers/metrics/seats/summary")).json(parse_float=Decimal)
    ordered = [Decimal(v) for v in values]
    assert (body["count"], body["sum"]) == (203, sum(values))
    assert (body["min"], body["max"]) == (-(2**63), 2**63 - 1)
    for name, p in (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99")):
        assert Decimal(body[name]) == _percentile(ordered, Decimal(p)).quantize(Decimal("1e-12")), (
            name
        )


async def test_a_value_removed_between_the_count_and_the_ranks_is_counted_again(
    client, monkeypatch
):
    """The count comes from one statement, the values at the percentile ranks from others: a
    customer erased in between leaves a rank missing. The summary counts again from the
    values themselves instead of failing."""
    await create_metric(client, name="ARR")
    for customer, value in (("a", 10), ("b", 20), ("c", 30)):
        await write_value(client, customer, "arr", value=value)
    counted = SummaryService._totals

    async def one_more_than_there_is(self, metric, as_of):
        count, total = await counted(self, metric, as_of)
        return count + 1, total + 40  # as if a customer with 40 was erased since

    monkeypatch.setattr(SummaryService, "_totals", one_more_than_there_is)
    response = await client.get("/customers/metrics/arr/summary")
    assert response.status_code == 200, response.text
    body = response.json(parse_float=Decimal)
    assert (body["count"], body["sum"], body["min"], body["max"]) == (3, 60, 10, 30)
    assert body["p50"] == 20


async def test_values_that_keep_changing_under_a_summary_give_a_retryable_503(client, monkeypatch):
    await create_metric(client, name="ARR")
    await write_value(client, "a", "arr", value=10)

    async def always_more(self, metric_ref, data_type, as_of):
        return 5, Decimal(50)

    async def counted_more(self, metric, as_of):
        return 5, Decimal(50)

    monkeypatch.setattr(SummaryService, "_totals", counted_more)
    monkeypatch.setattr(SummaryRepository, "totals", always_more)
    response = await client.get("/customers/metrics/arr/summary")
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable"
