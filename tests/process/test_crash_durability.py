"""`kill -9` during mixed writes, 20 times: batches, single values and increments all flow
at once, and after the last restart nothing the server acknowledged is missing, no batch is
stored in part, and every counter holds exactly the sum of the increments that applied.

Writers (all concurrent, each with its own connection):
- two batch senders: 400 plain values for the batch's own new customer at instants no other
  batch uses, plus one increment of a counter shared by every batch (so a batch stored in part
  would show in its items or in that counter);
- two single-value senders, each write one observation at an instant of its own;
- two increment senders, adding 1..9 to one shared counter, every increment with an
  `Idempotency-Key` of its own.

Each round's kill comes after a random number (1-4) of answers of one kind of write, drawn
per round, either the moment one arrives (a write committed only after answering would be
lost: moving the single-value commit into a dependency's teardown made this test fail) or up
to 80 ms later, so it lands on writes at every stage: being read, being stored, committing, or
answered but not yet received.

Increments cut off by a kill may or may not have applied. Their effect and their stored
response commit in one transaction, and their key was claimed before, so after the last
restart each is sent again with its key, which says exactly what happened: a replay (it had
applied; the original answer comes back), `409 idempotency_in_progress` (its claim outlived
it, its effect did not), or a fresh 201 (not even the claim was stored; it applies now). The
counter must then equal the sum of the increments that applied, observation by observation.

Nearly all the time goes to the 21 server starts: on a shared 2-core machine under load
(load average 5-6, 4-7 s a start) the kills took 85-92 s per backend and the check 10-17 s."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]

ROUNDS = 20
BATCH_SENDERS = SINGLE_SENDERS = INCREMENT_SENDERS = 2
CUSTOMERS_PER_BATCH = 1  # read back one page per metric (a page holds 200)
INSTANTS_PER_BATCH = 200  # 2 metrics x 200 instants = 400 values a batch
METRICS = (("Events", "INTEGER"), ("Revenue", "NUMBER"), ("Balance", "INTEGER"))
BATCH_COUNTER = "counter-of-batches"
COUNTER = "crash-counter"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
SINGLES_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
SEED = int(os.environ.get("CM_TEST_SEED", time.time_ns() % 1_000_000))


def _timestamp(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


@dataclass
class Write:
    """One request and what came of it before the kill."""

    round: int
    answer: httpx.Response | None = None
    error: BaseException | None = None
    failed_before_kill: bool = False


@dataclass
class Batch(Write):
    number: int = 0
    customers: list[str] = field(default_factory=list)
    # (customer_id, metric key, observed_at) -> value, as the API returns it
    items: dict[tuple[str, str, str], Any] = field(default_factory=dict)

    def body(self, balance: str) -> dict[str, Any]:
        values: list[dict[str, Any]] = [
            {"customer_id": c, "metric": m, "value": v, "observed_at": t}
            for (c, m, t), v in self.items.items()
        ]
        values.append({"customer_id": BATCH_COUNTER, "metric": balance, "increment": self.number})
        return {"values": values}


@dataclass
class Single(Write):
    customer: str = ""
    observed_at: str = ""
    value: int = 0


@dataclass
class Increment(Write):
    key: str = ""
    amount: int = 0
    retry: httpx.Response | None = None  # sent again with its key after the last restart

    def applied(self) -> bool:
        """Whether it applied (exactly once): known from its answer or from its retry."""
        if self.answer is not None:
            return True
        assert self.retry is not None
        return self.retry.status_code == 201


@dataclass
class Writes:
    keys: dict[str, str]  # metric name -> key
    batches: list[Batch] = field(default_factory=list)
    singles: list[Single] = field(default_factory=list)
    increments: list[Increment] = field(default_factory=list)
    answers: Counter[type[Write]] = field(default_factory=Counter)

    def next_batch(self, round_: int) -> Batch:
        number = len(self.batches) + 1
        customers = [f"crash-b{number:05d}-c{j}" for j in range(CUSTOMERS_PER_BATCH)]
        start = EPOCH + timedelta(hours=number)
        batch = Batch(round_, number=number, customers=customers)
        for c_index, customer in enumerate(customers):
            for i in range(INSTANTS_PER_BATCH):
                observed_at = _timestamp(start + timedelta(seconds=i, milliseconds=c_index))
                batch.items[(customer, self.keys["Events"], observed_at)] = number * 1000 + i
                batch.items[(customer, self.keys["Revenue"], observed_at)] = float(
                    f"{number}.{i:02d}"
                )
        self.batches.append(batch)
        return batch

    def next_single(self, round_: int, sender: int) -> Single:
        number = len(self.singles) + 1
        instant = _timestamp(SINGLES_EPOCH + timedelta(seconds=number))
        single = Single(
            round_, customer=f"crash-single-{sender}", observed_at=instant, value=number
        )
        self.singles.append(single)
        return single

    def next_increment(self, round_: int, rng: random.Random) -> Increment:
        number = len(self.increments) + 1
        increment = Increment(round_, key=f"crash-inc-{number}", amount=rng.randint(1, 9))
        self.increments.append(increment)
        return increment


class Killer:
    """Kills the server after a random number of answers of one kind of write (1-4, the kind
    drawn per round): at the very moment the answer arrives (a write committed only after
    answering would be lost), or up to 80 ms later (somewhere inside the writes in flight)."""

    def __init__(self, server: ServerProcess, writes: Writes, rng: random.Random) -> None:
        self.server = server
        self.kind = rng.choice([Batch, Single, Increment])
        self.kill_at = writes.answers[self.kind] + rng.randint(1, 4)
        self.delay = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.08)
        self.writes = writes
        self.reached = asyncio.Event()
        self.killed = False

    def kill(self) -> None:
        self.killed = True
        self.server.kill()

    async def send(self, write: Write, request: Any) -> bool:
        """Sends one write; False once the server is gone."""
        try:
            write.answer = await request
        except httpx.TransportError as error:
            write.error = error
            write.failed_before_kill = not self.killed
            self.reached.set()
            return False
        kind = type(write)
        self.writes.answers[kind] += 1
        if kind is self.kind and self.writes.answers[kind] == self.kill_at:
            if not self.delay:
                self.kill()  # before anything else runs in this process
            self.reached.set()
        return True

    async def __call__(self) -> None:
        await self.reached.wait()
        if not self.killed:
            await asyncio.sleep(self.delay)
            self.kill()


async def _write_then_kill(
    server: ServerProcess, api_key: str, writes: Writes, round_: int, rng: random.Random
) -> None:
    killer = Killer(server, writes, rng)
    events, balance = writes.keys["Events"], writes.keys["Balance"]

    async def batch_sender(client: httpx.AsyncClient) -> None:
        while True:
            batch = writes.next_batch(round_)
            request = client.post("/customers/metrics/values", json=batch.body(balance))
            if not await killer.send(batch, request):
                return

    async def single_sender(client: httpx.AsyncClient, sender: int) -> None:
        while True:
            single = writes.next_single(round_, sender)
            body = {"value": single.value, "observed_at": single.observed_at}
            path = f"/customers/{single.customer}/metrics/{events}/values"
            if not await killer.send(single, client.post(path, json=body)):
                return

    async def increment_sender(client: httpx.AsyncClient) -> None:
        while True:
            increment = writes.next_increment(round_, rng)
            request = client.post(
                f"/customers/{COUNTER}/metrics/{balance}/values",
                json={"increment": increment.amount},
                headers={"Idempotency-Key": increment.key},
            )
            if not await killer.send(increment, request):
                return

    clients = [server.client(api_key) for _ in range(6)]
    try:
        senders = [asyncio.ensure_future(batch_sender(c)) for c in clients[:BATCH_SENDERS]]
        senders += [
            asyncio.ensure_future(single_sender(c, n))
            for n, c in enumerate(clients[2 : 2 + SINGLE_SENDERS])
        ]
        senders += [asyncio.ensure_future(increment_sender(c)) for c in clients[4:]]
        await killer()
        await asyncio.gather(*senders)
    finally:
        for client in clients:
            await client.aclose()


async def _history(client: httpx.AsyncClient, customer: str, key: str) -> list[dict[str, Any]]:
    """Every observation, newest first; [] for a customer that does not exist."""
    observations: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = await client.get(f"/customers/{customer}/metrics/{key}/values", params=params)
        if page.status_code == 404 and not observations:
            return []
        assert page.status_code == 200, page.text
        observations += page.json()["data"]
        if page.json()["next_cursor"] is None:
            return observations
        params["cursor"] = page.json()["next_cursor"]


async def _stored_customers(client: httpx.AsyncClient, q: str) -> set[str]:
    found: set[str] = set()
    params: dict[str, Any] = {"limit": 200, "q": q}
    while True:
        page = await client.get("/customers", params=params)
        assert page.status_code == 200, page.text
        found |= {c["customer_id"] for c in page.json()["data"]}
        if page.json()["next_cursor"] is None:
            return found
        params["cursor"] = page.json()["next_cursor"]


def _check_answers(writes: Writes) -> None:
    """Whatever came back before a kill was a whole, right answer; the rest were cut off."""
    everything: list[Write] = [*writes.batches, *writes.singles, *writes.increments]
    answered = [w for w in everything if w.answer is not None]
    assert not [w for w in answered if w.answer.status_code >= 500], [
        (w, w.answer.text) for w in answered if w.answer.status_code >= 500
    ]
    for batch in writes.batches:
        if batch.answer is not None:
            expected = {"accepted": len(batch.items) + 1, "rejected": 0, "errors": []}
            assert (batch.answer.status_code, batch.answer.json()) == (200, expected)
    for single in writes.singles:
        if single.answer is not None:
            assert single.answer.status_code == 201, single.answer.text
            assert single.answer.json()["value"] == single.value
    for increment in writes.increments:
        if increment.answer is not None:
            assert increment.answer.status_code == 201, increment.answer.text
    cut_off = [w for w in everything if w.answer is None]
    assert all(isinstance(w.error, httpx.TransportError) for w in cut_off)
    early = [(w, repr(w.error)) for w in cut_off if w.failed_before_kill]
    assert not early, f"the server stopped answering before it was killed: {early}"


def _check_batches(
    writes: Writes, stored: list[dict[tuple[str, str, str], Any]], customers: set[str]
) -> tuple[int, list[str]]:
    """Every answered batch whole, every other whole or absent; returns how many cut-off
    batches were stored whole, and the problems."""
    whole_unanswered = 0
    problems = []
    for batch, items in zip(writes.batches, stored, strict=True):
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
    return whole_unanswered, problems


def _check_counter(history: list[dict[str, Any]], applied: list[int], told: list[int]) -> None:
    """The counter went up once per applied increment, by its amount, and holds their sum;
    every total an increment was told is one of its observations."""
    totals = [o["value"] for o in reversed(history)]  # oldest first
    steps = [b - a for a, b in zip([0, *totals], totals, strict=False)]
    assert Counter(steps) == Counter(applied), (Counter(steps), Counter(applied))
    assert (totals[-1] if totals else 0) == sum(applied)
    assert set(told) <= set(totals), set(told) - set(totals)


async def test_no_acknowledged_write_is_lost_across_20_kills(server: ServerProcess):
    print(f"seed {SEED} (set CM_TEST_SEED to replay)")
    rng = random.Random(SEED)
    org = server.create_org("Crash durability")
    async with server.client(org["api_key"]) as client:
        keys = {}
        for name, data_type in METRICS:
            created = await client.post(
                "/customers/metrics", json={"name": name, "data_type": data_type}
            )
            assert created.status_code == 201, created.text
            keys[name] = created.json()["key"]

    writes = Writes(keys)
    started = time.monotonic()
    for round_ in range(1, ROUNDS + 1):
        if round_ > 1:
            server.start()
        await _write_then_kill(server, org["api_key"], writes, round_, rng)
        with pytest.raises(httpx.TransportError):
            httpx.get(server.base_url + "/healthz", timeout=2.0)
    writing = time.monotonic() - started
    _check_answers(writes)
    assert min(writes.answers[kind] for kind in (Batch, Single, Increment)) >= ROUNDS // 2, (
        f"too few answers: the kills came too early {writes.answers}"
    )

    server.start()
    gate = asyncio.Semaphore(8)
    events, balance = keys["Events"], keys["Balance"]

    async def batch_items(batch: Batch) -> dict[tuple[str, str, str], Any]:
        stored: dict[tuple[str, str, str], Any] = {}
        for customer in batch.customers:
            for key in (events, keys["Revenue"]):
                async with gate:
                    for obs in await _history(client, customer, key):
                        stored[(customer, key, obs["observed_at"])] = obs["value"]
        return stored

    async with server.client(org["api_key"]) as client:
        # Cut-off increments sent again with their keys, in the order first sent.
        for increment in writes.increments:
            if increment.answer is None:
                increment.retry = await client.post(
                    f"/customers/{COUNTER}/metrics/{balance}/values",
                    json={"increment": increment.amount},
                    headers={"Idempotency-Key": increment.key},
                )
        customers = await _stored_customers(client, "crash-b")
        stored_batches = await asyncio.gather(*(batch_items(b) for b in writes.batches))
        singles_stored = {
            (s.customer, o["observed_at"]): o["value"]
            for s in {s.customer: s for s in writes.singles}.values()
            for o in await _history(client, s.customer, events)
        }
        counter = await _history(client, COUNTER, balance)
        batch_counter = await _history(client, BATCH_COUNTER, balance)

    # Batches: answered ones whole, the rest whole or absent, and nothing else stored.
    whole_unanswered, problems = _check_batches(writes, stored_batches, customers)
    assert not problems, "\n".join(problems)
    expected_customers = {
        c
        for b, items in zip(writes.batches, stored_batches, strict=True)
        if items
        for c in b.customers
    }
    assert customers == expected_customers, customers ^ expected_customers
    # Each stored batch applied its increment of the batches' counter once, and no other did.
    stored_numbers = [
        b.number for b, items in zip(writes.batches, stored_batches, strict=True) if items
    ]
    _check_counter(batch_counter, stored_numbers, [])

    # Single values: every answered one stored as sent; cut-off ones stored as sent or not at
    # all; nothing that was not sent.
    sent = {(s.customer, s.observed_at): s for s in writes.singles}
    lost_singles = [
        f"{s.customer} at {s.observed_at} (round {s.round})"
        for s in writes.singles
        if s.answer is not None and (s.customer, s.observed_at) not in singles_stored
    ]
    assert not lost_singles, f"acknowledged single values lost: {lost_singles}"
    assert singles_stored.keys() <= sent.keys(), singles_stored.keys() - sent.keys()
    assert all(sent[k].value == v for k, v in singles_stored.items())

    # Increments: every cut-off one now settled by its key; the counter is exact.
    retries = Counter(
        (i.retry.status_code, i.retry.headers.get("idempotent-replayed"))
        for i in writes.increments
        if i.retry is not None
    )
    assert set(retries) <= {(201, "true"), (201, None), (409, None)}, retries
    for increment in writes.increments:
        if increment.retry is not None and increment.retry.status_code == 409:
            assert increment.retry.json()["code"] == "idempotency_in_progress"
    applied = [i.amount for i in writes.increments if i.applied()]
    told = [
        r.json()["value"]
        for i in writes.increments
        for r in (i.answer, i.retry)
        if r is not None and r.status_code == 201
    ]
    _check_counter(counter, applied, told)

    answered = Counter(
        type(w).__name__
        for w in [*writes.batches, *writes.singles, *writes.increments]
        if w.answer is not None
    )
    cut = Counter(
        type(w).__name__
        for w in [*writes.batches, *writes.singles, *writes.increments]
        if w.answer is None
    )
    singles_cut_stored = sum(
        (s.customer, s.observed_at) in singles_stored for s in writes.singles if s.answer is None
    )
    print(
        f"{ROUNDS} kills in {writing:.1f}s; acknowledged and read back: {answered['Batch']} "
        f"batches, {answered['Single']} single values, {answered['Increment']} increments; "
        f"lost: 0. Cut off: {cut['Batch']} batches ({whole_unanswered} committed whole, the "
        f"rest not at all), {cut['Single']} single values ({singles_cut_stored} committed), "
        f"{cut['Increment']} increments (retried with their keys: {retries[(201, 'true')]} "
        f"replayed, {retries[(409, None)]} claimed but not applied, {retries[(201, None)]} "
        f"applied on retry); counter {sum(applied)} = sum of {len(applied)} applied increments"
    )
