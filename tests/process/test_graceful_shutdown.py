"""SIGTERM to `customer-metrics serve` with 20 write requests in flight: all 20 finish with
their right answers, new connections are refused from the signal on, the server then exits by
itself, and every acknowledged write is there after a restart. With `--workers 2`, requests
are in flight in both workers when the signal comes.

The requests are held in flight by a lock the test takes in the database (a SHARE lock on
`metric_values` in PostgreSQL, the write lock of the SQLite file): they are parsed,
authenticated and waiting on the database when the signal arrives, and cannot finish before
the test has checked that new connections are refused. The test waits until the database
shows all 20 inside their handlers (PostgreSQL: 20 backends waiting on a lock; SQLite: 20 open
connections to the file), then signals, then lets them go: the batch writes among them then
take a while to store, which the shutdown has to wait for."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]

IN_FLIGHT = 20
BATCHES = 8  # 1,500 items each
SINGLES = 6
INCREMENTS = IN_FLIGHT - BATCHES - SINGLES
CUSTOMERS_PER_BATCH = 3
INSTANTS_PER_BATCH = 250
COUNTER_CUSTOMER = "shutdown-counter"
EPOCH = datetime(2025, 6, 1, tzinfo=UTC)
SETTLE_TIMEOUT = 20.0
REFUSED_WITHIN = 3.0  # the supervisor of `--workers` looks at its signals every 0.5 s
EXIT_TIMEOUT = 30.0


def _timestamp(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def _batch_items(number: int, keys: list[str]) -> dict[tuple[str, str, str], Any]:
    """(customer_id, metric key, observed_at) -> value as the API returns it."""
    events, revenue = keys
    items: dict[tuple[str, str, str], Any] = {}
    for c in range(CUSTOMERS_PER_BATCH):
        customer = f"shutdown-b{number}-c{c}"
        for i in range(INSTANTS_PER_BATCH):
            observed_at = _timestamp(EPOCH + timedelta(hours=number, seconds=i))
            items[(customer, events, observed_at)] = number * 10_000 + i
            items[(customer, revenue, observed_at)] = float(f"{number}.{i:03d}")
    return items


class DatabaseLock:
    """Holds every value write of the server's database until released."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.env.get("CM_DATABASE_URL", "")
        self.sqlite_path = Path(server.env["CM_DATA_DIR"]) / "customer-metrics.db"
        self._pg: asyncpg.Connection | None = None
        self._sqlite: sqlite3.Connection | None = None

    async def take(self) -> None:
        if self.url:
            self._pg = await asyncpg.connect(self.url)
            await self._pg.execute("BEGIN; LOCK TABLE metric_values IN SHARE MODE")
        else:
            self._sqlite = sqlite3.connect(self.sqlite_path, isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")

    async def release(self) -> None:
        if self._pg is not None:
            await self._pg.execute("ROLLBACK")
            await self._pg.close()
            self._pg = None
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None

    async def requests_inside(self, server: ServerProcess) -> int:
        """How many requests are inside their handlers, holding a database connection."""
        if self._pg is not None:
            # Activity is read once per transaction unless the snapshot is cleared.
            await self._pg.execute("SELECT pg_stat_clear_snapshot()")
            return int(
                await self._pg.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            )
        # Connections are opened on demand: after a fresh start every open one is a request's.
        return sum(_open_files(pid, self.sqlite_path) for pid in server.serving_pids())


def _open_files(pid: int, path: Path) -> int:
    count = 0
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                count += fd.readlink() == path.resolve()
    return count


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def connection_owners(server: ServerProcess) -> dict[int, int]:
    """Client port -> the serving process that accepted that connection to the server."""
    client_port_of: dict[int, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = (int(a.split(":")[1], 16) for a in fields[1:3])
        if local_port == server.port and fields[3] == "01":  # ESTABLISHED
            client_port_of[int(fields[9])] = remote_port
    return {
        client_port_of[inode]: pid
        for pid in server.serving_pids()
        for inode in _socket_inodes(pid) & client_port_of.keys()
    }


def _client_port(response: httpx.Response) -> int:
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


async def connections_on_every_worker(
    server: ServerProcess, api_key: str, workers: int, stack: contextlib.AsyncExitStack
) -> list[tuple[httpx.AsyncClient, int]]:
    """IN_FLIGHT clients, each with one open connection, spread evenly over the workers:
    (client, client port). Which worker accepts a connection is up to the kernel, so a few
    more are opened at once than needed, and opened afresh until every worker has its share
    (all from one go: uvicorn closes a connection left idle for 5 s)."""
    share = IN_FLIGHT // workers
    for _ in range(10):
        clients = [await stack.enter_async_context(server.client(api_key)) for _ in range(60)]
        answers = await asyncio.gather(*(c.get(server.base_url + "/healthz") for c in clients))
        owners = connection_owners(server)
        chosen: dict[int, list[tuple[httpx.AsyncClient, int]]] = {}
        for client, answer in zip(clients, answers, strict=True):
            assert answer.status_code == 200, answer.text
            mine = chosen.setdefault(owners[_client_port(answer)], [])
            if len(mine) < share:
                mine.append((client, _client_port(answer)))
        if len(chosen) == workers and all(len(c) == share for c in chosen.values()):
            return [pair for pairs in chosen.values() for pair in pairs]
    pytest.fail(f"could not spread connections over {workers} workers: {chosen}")


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


async def _until(check: Callable[[], Awaitable[str | None]], timeout: float) -> None:
    """Waits until `check` has nothing left to wait for (it returns what it still waits for)."""
    deadline = time.monotonic() + timeout
    while (waiting := await check()) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {waiting}")
        await asyncio.sleep(0.02)


class InFlight:
    """The 20 requests: batches, single values and increments, each on its own connection."""

    def __init__(self, connections: list[tuple[httpx.AsyncClient, int]], keys: list[str]) -> None:
        self.connections = connections
        self.keys = keys
        self.batches = {n: _batch_items(n, keys) for n in range(1, BATCHES + 1)}
        self.singles = {f"shutdown-s{n}": n * 1.5 for n in range(1, SINGLES + 1)}
        self.bodies_sent = 0
        self.new_connections = 0
        self.tasks: list[asyncio.Task[httpx.Response]] = []

    async def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "http11.send_request_body.complete":
            self.bodies_sent += 1
        elif event == "connection.connect_tcp.started":
            self.new_connections += 1

    def _post(self, path: str, body: dict[str, Any]) -> asyncio.Task[httpx.Response]:
        client, _ = self.connections[len(self.tasks)]
        return asyncio.ensure_future(
            client.post(path, json=body, extensions={"trace": self._trace})
        )

    def start(self) -> None:
        events, revenue = self.keys
        for items in self.batches.values():
            values = [
                {"customer_id": c, "metric": m, "value": v, "observed_at": t}
                for (c, m, t), v in items.items()
            ]
            self.tasks.append(self._post("/customers/metrics/values", {"values": values}))
        for customer, value in self.singles.items():
            self.tasks.append(
                self._post(f"/customers/{customer}/metrics/{revenue}/values", {"value": value})
            )
        for _ in range(INCREMENTS):
            self.tasks.append(
                self._post(
                    f"/customers/{COUNTER_CUSTOMER}/metrics/{events}/values", {"increment": 1}
                )
            )
        assert len(self.tasks) == IN_FLIGHT

    def answered(self) -> int:
        return sum(t.done() for t in self.tasks)

    def open(self, server: ServerProcess) -> int:
        owners = connection_owners(server)
        return sum(port in owners for _, port in self.connections)

    async def check_answers(self) -> None:
        responses = await asyncio.gather(*self.tasks)
        # Each went on the connection opened for it (so to the worker chosen for it).
        assert self.new_connections == 0
        batch_answers = responses[:BATCHES]
        single_answers = responses[BATCHES : BATCHES + SINGLES]
        increment_answers = responses[BATCHES + SINGLES :]
        for items, answer in zip(self.batches.values(), batch_answers, strict=True):
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"accepted": len(items), "rejected": 0, "errors": []}
        for (customer, value), answer in zip(self.singles.items(), single_answers, strict=True):
            assert answer.status_code == 201, answer.text
            assert (answer.json()["customer_id"], answer.json()["value"]) == (customer, value)
        for answer in increment_answers:
            assert answer.status_code == 201, answer.text
        # Each increment was told the total it produced: 1..n, each once.
        told = sorted(r.json()["value"] for r in increment_answers)
        assert told == list(range(1, INCREMENTS + 1)), told

    async def check_stored(self, client: httpx.AsyncClient) -> None:
        events, revenue = self.keys
        for items in self.batches.values():
            stored: dict[tuple[str, str, str], Any] = {}
            for customer, key in {(c, k) for c, k, _ in items}:
                async for obs in _history(client, customer, key):
                    stored[(customer, key, obs["observed_at"])] = obs["value"]
            assert stored == items
        for customer, value in self.singles.items():
            current = await client.get(f"/customers/{customer}/metrics")
            assert current.status_code == 200, current.text
            assert [(r["key"], r["value"]) for r in current.json()["data"]] == [(revenue, value)]
        totals = [o["value"] async for o in _history(client, COUNTER_CUSTOMER, events)]
        assert totals == list(range(INCREMENTS, 0, -1)), totals


async def _history(
    client: httpx.AsyncClient, customer: str, key: str
) -> AsyncIterator[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = await client.get(f"/customers/{customer}/metrics/{key}/values", params=params)
        assert page.status_code == 200, page.text
        for obs in page.json()["data"]:
            yield obs
        if page.json()["next_cursor"] is None:
            return
        params["cursor"] = page.json()["next_cursor"]


async def _prepare(server: ServerProcess, workers: int, **env: str) -> tuple[str, list[str]]:
    org = server.create_org("Graceful shutdown")
    async with server.client(org["api_key"]) as client:
        keys = []
        for name, data_type in (("Events", "INTEGER"), ("Revenue", "NUMBER")):
            created = await client.post(
                "/customers/metrics", json={"name": name, "data_type": data_type}
            )
            assert created.status_code == 201, created.text
            keys.append(created.json()["key"])
    # A fresh start: no database connection is open until a request opens one. A pool of 20
    # per worker lets each of the 20 requests hold its own.
    server.stop()
    server.env.update(CM_POOL_SIZE=str(IN_FLIGHT), **env)
    server.workers = workers
    server.start()
    return org["api_key"], keys


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
async def test_sigterm_finishes_20_requests_in_flight_and_refuses_new_ones(
    server: ServerProcess, workers: int
):
    api_key, keys = await _prepare(server, workers)
    lock = DatabaseLock(server)
    try:
        async with contextlib.AsyncExitStack() as stack:
            connections = await connections_on_every_worker(server, api_key, workers, stack)
            owners = connection_owners(server)
            spread = Counter(owners.get(port) for _, port in connections)
            await lock.take()
            requests = InFlight(connections, keys)
            requests.start()

            async def all_inside() -> str | None:
                inside = await lock.requests_inside(server)
                if (requests.bodies_sent, inside, requests.open(server)) == (IN_FLIGHT,) * 3:
                    return None
                return (
                    f"{IN_FLIGHT} requests inside the server: {requests.bodies_sent} sent, "
                    f"{inside} inside their handlers, {requests.open(server)} connections open"
                )

            await _until(all_inside, SETTLE_TIMEOUT)
            assert requests.answered() == 0

            server.terminate()
            signalled = time.monotonic()
            while not connection_refused(server.port):
                assert time.monotonic() - signalled < REFUSED_WITHIN, "still accepting"
                await asyncio.sleep(0.02)
            refused_after = time.monotonic() - signalled
            assert requests.answered() == 0, "a held request finished before its lock was freed"

            await lock.release()
            await requests.check_answers()
            drained_after = time.monotonic() - signalled
            status = await asyncio.to_thread(server.wait_exit, EXIT_TIMEOUT)
            exited_after = time.monotonic() - signalled
    finally:
        await lock.release()

    assert status in (0, -signal.SIGTERM), status
    log = server.log()
    assert "Traceback" not in log, log
    assert "timeout graceful shutdown exceeded" not in log, log

    server.workers = 1
    server.start()
    async with server.client(api_key) as client:
        await requests.check_stored(client)
    print(
        f"{workers} worker(s), requests per worker {sorted(spread.values())}: refused "
        f"{refused_after:.2f}s after SIGTERM, 20/20 answered at {drained_after:.2f}s, "
        f"exited at {exited_after:.2f}s; all acknowledged writes read back"
    )


async def test_requests_still_running_at_the_shutdown_timeout_are_cut_off_unstored(
    server: ServerProcess,
):
    """CM_SHUTDOWN_TIMEOUT_SECONDS bounds the drain: a request still held then is cancelled
    (rolled back, never acknowledged), and the server exits."""
    api_key, (events, _) = await _prepare(server, workers=1, CM_SHUTDOWN_TIMEOUT_SECONDS="1")
    lock = DatabaseLock(server)
    await lock.take()
    try:
        async with server.client(api_key) as client:
            held = asyncio.ensure_future(
                client.post(f"/customers/held/metrics/{events}/values", json={"value": 1})
            )

            async def one_inside() -> str | None:
                return None if await lock.requests_inside(server) == 1 else "the held request"

            await _until(one_inside, SETTLE_TIMEOUT)
            server.terminate()
            signalled = time.monotonic()
            status = await asyncio.to_thread(server.wait_exit, EXIT_TIMEOUT)
            exited_after = time.monotonic() - signalled
            # Cancelled: uvicorn answers a plain 500 if it still can, else the connection is cut.
            outcome = (await asyncio.gather(held, return_exceptions=True))[0]
    finally:
        await lock.release()
    assert status in (0, -signal.SIGTERM), status
    assert exited_after < 5, exited_after
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in server.log()
    if isinstance(outcome, httpx.Response):
        assert outcome.status_code == 500, outcome.text
    else:
        assert isinstance(outcome, httpx.TransportError), outcome

    server.start()
    async with server.client(api_key) as client:
        stored = await client.get("/customers/held/metrics")
    assert stored.status_code == 404, stored.text
    cut = "answered 500" if isinstance(outcome, httpx.Response) else "cut off"
    print(f"exited {exited_after:.2f}s after SIGTERM, the held request {cut}, not stored")
