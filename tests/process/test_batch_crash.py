"""`kill -9` during continuous batch ingestion, 20 times: every batch the server answered is
stored whole, and no batch — answered or cut off by the kill — is ever stored in part.

Each batch writes its own customers (named after the batch), two metrics for each, at
instants no other batch uses, so after the last restart every batch can be told apart and
checked item by item. Three senders keep batches in flight; the kill comes after a random
number of answers, either the moment one arrives (a batch committed only after answering
would be lost) or at a random moment up to 80 ms later, so it lands on batches at every
stage: being read, being stored, committing, or answered but not yet received.

Rounds are kept cheap (one server start each, a few 400-item batches) so that the 20 kills
take about 20 s per backend; the check at the end reads each batch's four histories."""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]

ROUNDS = 20
SENDERS = 3
CUSTOMERS_PER_BATCH = 2
INSTANTS_PER_BATCH = 100  # 2 customers x 2 metrics x 100 instants = 400 items a batch
METRICS = (("Events", "INTEGER"), ("Revenue", "NUMBER"))
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
SEED = int(os.environ.get("CM_TEST_SEED", time.time_ns() % 1_000_000))


def _timestamp(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


@dataclass
class Batch:
    number: int
    round: int
    customers: list[str]
    # (customer_id, metric key, observed_at) -> value, as the API returns it
    items: dict[tuple[str, str, str], Any]
    answer: httpx.Response | None = None
    error: BaseException | None = None
    failed_before_kill: bool = False

    def body(self) -> dict[str, Any]:
        values = [
            {"customer_id": c, "metric": m, "value": v, "observed_at": t}
            for (c, m, t), v in self.items.items()
        ]
        return {"values": values}


def make_batch(number: int, round_: int, keys: list[str]) -> Batch:
    customers = [f"crash-b{number:05d}-c{j}" for j in range(CUSTOMERS_PER_BATCH)]
    start = EPOCH + timedelta(hours=number)
    items: dict[tuple[str, str, str], Any] = {}
    for c_index, customer in enumerate(customers):
        for i in range(INSTANTS_PER_BATCH):
            observed_at = _timestamp(start + timedelta(seconds=i, milliseconds=c_index))
            events, revenue = keys
            items[(customer, events, observed_at)] = number * 1000 + i
            items[(customer, revenue, observed_at)] = float(f"{number}.{i:02d}")
    return Batch(number, round_, customers, items)


@dataclass
class Ingestion:
    keys: list[str]
    batches: list[Batch] = field(default_factory=list)
    answered: int = 0

    def next_batch(self, round_: int) -> Batch:
        batch = make_batch(len(self.batches) + 1, round_, self.keys)
        self.batches.append(batch)
        return batch


async def _ingest_then_kill(
    server: ServerProcess, api_key: str, ingestion: Ingestion, round_: int, rng: random.Random
) -> None:
    """Senders post batches back to back; the kill comes after a few answers: either at the
    very moment one arrives (what was just answered may still be finishing), or a little
    later (somewhere inside the batches in flight)."""
    kill_at = ingestion.answered + rng.randint(1, 4)
    delay = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.08)
    reached = asyncio.Event()
    killed = False

    def kill() -> None:
        nonlocal killed
        killed = True
        server.kill()

    async def sender(client: httpx.AsyncClient) -> None:
        try:
            while True:
                batch = ingestion.next_batch(round_)
                try:
                    batch.answer = await client.post("/customers/metrics/values", json=batch.body())
                except httpx.TransportError as error:
                    batch.error = error
                    batch.failed_before_kill = not killed
                    return
                ingestion.answered += 1
                if ingestion.answered == kill_at:
                    if not delay:
                        kill()  # before anything else runs in this process
                    reached.set()
        finally:
            reached.set()

    async with server.client(api_key) as client:
        senders = [asyncio.ensure_future(sender(client)) for _ in range(SENDERS)]
        await reached.wait()
        if not killed:
            await asyncio.sleep(delay)
            kill()
        await asyncio.gather(*senders)


async def _stored_customers(client: httpx.AsyncClient) -> set[str]:
    found: set[str] = set()
    params: dict[str, Any] = {"limit": 200, "q": "crash-b"}
    while True:
        page = await client.get("/customers", params=params)
        assert page.status_code == 200, page.text
        found |= {c["customer_id"] for c in page.json()["data"]}
        if page.json()["next_cursor"] is None:
            return found
        params["cursor"] = page.json()["next_cursor"]


async def _stored_items(
    client: httpx.AsyncClient, batch: Batch, keys: list[str], gate: asyncio.Semaphore
) -> dict[tuple[str, str, str], Any]:
    stored: dict[tuple[str, str, str], Any] = {}
    for customer in batch.customers:
        for key in keys:
            async with gate:
                page = await client.get(
                    f"/customers/{customer}/metrics/{key}/values", params={"limit": 200}
                )
            if page.status_code == 404:  # the customer does not exist
                continue
            assert page.status_code == 200, page.text
            assert page.json()["next_cursor"] is None
            for obs in page.json()["data"]:
                stored[(customer, key, obs["observed_at"])] = obs["value"]
    return stored


async def test_no_batch_is_lost_or_half_stored_across_20_kills(server: ServerProcess):
    print(f"seed {SEED} (set CM_TEST_SEED to replay)")
    rng = random.Random(SEED)
    org = server.create_org("Batch crash")
    async with server.client(org["api_key"]) as client:
        keys = []
        for name, data_type in METRICS:
            created = await client.post(
                "/customers/metrics", json={"name": name, "data_type": data_type}
            )
            assert created.status_code == 201, created.text
            keys.append(created.json()["key"])

    ingestion = Ingestion(keys)
    started = time.monotonic()
    for round_ in range(1, ROUNDS + 1):
        if round_ > 1:
            server.start()
        await _ingest_then_kill(server, org["api_key"], ingestion, round_, rng)
        with pytest.raises(httpx.TransportError):
            httpx.get(server.base_url + "/healthz", timeout=2.0)
    ingesting = time.monotonic() - started

    answered = [b for b in ingestion.batches if b.answer is not None]
    cut_off = [b for b in ingestion.batches if b.answer is None]
    # Whatever came back before the kill was a whole answer about a whole batch.
    assert not [b for b in answered if b.answer.status_code >= 500], [
        (b.number, b.answer.status_code, b.answer.text) for b in answered
    ]
    for batch in answered:
        assert batch.answer.status_code == 200, (batch.number, batch.answer.text)
        assert batch.answer.json() == {"accepted": len(batch.items), "rejected": 0, "errors": []}
    assert all(isinstance(b.error, httpx.TransportError) for b in cut_off)
    early = [(b.number, repr(b.error)) for b in cut_off if b.failed_before_kill]
    assert not early, f"the server stopped answering before it was killed: {early}"
    assert len(answered) >= ROUNDS, "too few answers: the kills came before any batch finished"

    server.start()
    gate = asyncio.Semaphore(8)
    async with server.client(org["api_key"]) as client:
        customers = await _stored_customers(client)
        stored = await asyncio.gather(
            *(_stored_items(client, b, keys, gate) for b in ingestion.batches)
        )

    whole_unanswered = 0
    problems = []
    for batch, items in zip(ingestion.batches, stored, strict=True):
        present = [c for c in batch.customers if c in customers]
        outcome = "answered" if batch.answer is not None else "cut off by the kill"
        if batch.answer is not None or items or present:
            if items != batch.items or present != batch.customers:
                missing = len(batch.items.keys() - items.keys())
                wrong = sum(1 for k, v in items.items() if batch.items.get(k) != v)
                problems.append(
                    f"batch {batch.number} (round {batch.round}, {outcome}): "
                    f"{len(items)}/{len(batch.items)} items stored, {missing} missing, "
                    f"{wrong} wrong; customers present {present}"
                )
            elif batch.answer is None:
                whole_unanswered += 1
    assert not problems, "\n".join(problems)
    # Nothing else was stored either: exactly the customers of the stored batches.
    expected_customers = {
        c for b, items in zip(ingestion.batches, stored, strict=True) if items for c in b.customers
    }
    assert customers == expected_customers, customers ^ expected_customers

    print(
        f"{ROUNDS} kills in {ingesting:.1f}s: {len(answered)} batches answered and stored whole, "
        f"{len(cut_off)} cut off ({whole_unanswered} of them committed whole before the kill, "
        f"the rest not at all)"
    )
