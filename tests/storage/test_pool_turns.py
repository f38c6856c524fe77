"""Requests wait for a PostgreSQL connection first come, first served, and a request that gives
up its place (cancelled, or its connection cannot be opened) takes no connection with it."""

from __future__ import annotations

import asyncio

import pytest

from customer_metrics.errors import Unavailable
from customer_metrics.storage.database import Database
from tests.conftest import Backend


@pytest.fixture
async def database(backend: Backend) -> Database:
    if backend.name != "postgres":
        pytest.skip("an embedded SQLite file has no connection pool to wait for")
    return Database(backend.database_url, pool_size=2)


async def test_a_request_that_comes_back_waits_behind_those_already_waiting(
    database: Database,
) -> None:
    """A request released its connection and at once wants one again (the next request on the
    same keep-alive connection does): it must queue behind the ones already waiting, not take
    the connection it just gave back while they wait on (which made a few requests wait 10-20x
    the median under load)."""
    try:
        served: list[int] = []

        async def client(number: int) -> None:
            for _ in range(20):
                connection = await database.acquire()
                served.append(number)
                await asyncio.sleep(0)
                await database.release(connection)

        await asyncio.gather(*(client(number) for number in range(5)))
        assert len(served) == 100
        # Two connections, five clients always waiting: nobody is served a third time before
        # everyone else has been served, in any window of five turns.
        first_done = min(
            max(i for i, number in enumerate(served) if number == client_number)
            for client_number in range(5)
        )
        for start in range(0, first_done - 5):
            window = served[start : start + 5]
            assert len(set(window)) >= 4, (start, served)
    finally:
        await database.dispose()


async def test_a_cancelled_waiter_gives_its_place_back(database: Database) -> None:
    try:
        held = [await database.acquire() for _ in range(2)]
        gave_up = asyncio.create_task(database.acquire())
        await asyncio.sleep(0.01)
        gave_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        for connection in held:
            await database.release(connection)
        # Both connections are free again: two requests get one each at once.
        again = await asyncio.wait_for(
            asyncio.gather(database.acquire(), database.acquire()), timeout=5
        )
        for connection in again:
            await database.release(connection)
    finally:
        await database.dispose()


async def test_a_failed_connect_gives_its_place_back(backend: Backend) -> None:
    if backend.name != "postgres":
        pytest.skip("an embedded SQLite file has no connection pool to wait for")
    name = backend.database_url.rsplit("/", 1)[1]
    missing = backend.database_url.replace(name, name + "_missing")
    database = Database(missing, pool_size=1)
    try:
        for _ in range(3):  # a leaked turn would make the second attempt wait forever
            with pytest.raises(Unavailable):
                await asyncio.wait_for(database.acquire(), timeout=10)
    finally:
        await database.dispose()
