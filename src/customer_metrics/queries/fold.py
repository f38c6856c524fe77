"""Folding the series rollup in the background: every few seconds, each organization with
marked customers has their changes moved into its totals (queries/rollup_repository.py).
Answers do not wait for it (reads add what is not folded yet); it keeps that part small."""

from __future__ import annotations

import asyncio
import logging

from customer_metrics.queries.rollup_repository import (
    FOLD_BATCH,
    RollupRepository,
    organizations_with_marks_unscoped,
)
from customer_metrics.storage.database import Database, open_session
from customer_metrics.tenancy import Tenant

log = logging.getLogger("customer_metrics.queries")


async def fold_organization(database: Database, organization_id: int) -> int:
    """Folds every customer marked in the organization, a batch per transaction (which, on
    SQLite, begins only once the batch's changes are computed: see RollupRepository.fold)."""
    total = 0
    while True:
        session = await open_session(database, read_only=False, lazy_transaction=True)
        try:
            session.scope(organization_id)
            folded = await RollupRepository(session, Tenant(organization_id, 0)).fold()
            await session.commit()
        finally:
            await session.close()
        total += folded
        if folded < FOLD_BATCH:
            return total
        await asyncio.sleep(0)  # let requests in between batches


async def fold_once(database: Database) -> int:
    session = await open_session(database, read_only=True)
    try:
        organizations = await organizations_with_marks_unscoped(session)
    finally:
        await session.close()
    total, failed = 0, None
    for organization_id in organizations:
        try:
            total += await fold_organization(database, organization_id)
        except Exception as error:  # e.g. a metric deleted meanwhile: fold the others still
            failed = failed or error
    if failed is not None:
        raise failed
    return total


async def fold_forever(database: Database, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await fold_once(database)
        except Exception:  # retried next time; it must not stop the server
            log.warning("folding the series rollup failed", exc_info=True)
