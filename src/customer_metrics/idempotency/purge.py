"""Deleting expired idempotency keys in the background, in small batches."""

from __future__ import annotations

import asyncio
import logging

from customer_metrics import clock
from customer_metrics.idempotency.repository import purge_expired_unscoped
from customer_metrics.storage.database import Database, open_session

log = logging.getLogger("customer_metrics.idempotency")
BATCH = 1000


async def purge_once(database: Database) -> int:
    total = 0
    while True:
        session = await open_session(database, read_only=False)
        try:
            deleted = await purge_expired_unscoped(session, clock.now(), BATCH)
            await session.commit()
        finally:
            await session.close()
        total += deleted
        if deleted < BATCH:
            return total
        await asyncio.sleep(0)  # let requests in between batches


async def purge_forever(database: Database, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            purged = await purge_once(database)
        except Exception:  # a failed purge is retried next time; it must not stop the server
            log.warning("purging expired idempotency keys failed", exc_info=True)
        else:
            if purged:
                log.info("purged %d expired idempotency keys", purged)
