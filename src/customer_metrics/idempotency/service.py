"""The rules of idempotency keys. Never commits: the HTTP edge decides the transactions."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from customer_metrics import clock
from customer_metrics.errors import AppError, Conflict, InvalidRequest
from customer_metrics.idempotency.repository import (
    COMPLETED,
    IdempotencyRepository,
    StoredKey,
)

KEY_PATTERN = re.compile(r"^[\x20-\x7e]{1,255}$")
# A first request that has not finished after this long is taken to have died.
LEASE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Replay(AppError):
    """Not an error: the stored response of an earlier request with the same key and body."""

    status_code = 200
    code = "replay"

    def __init__(self, response: StoredResponse) -> None:
        super().__init__("replayed")
        self.response = response


class IdempotencyConflict(AppError):
    status_code = 422
    code = "idempotency_conflict"


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str) -> None:
    if not KEY_PATTERN.match(key):
        raise InvalidRequest(
            ("header", "Idempotency-Key"),
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            "string_pattern_mismatch",
        )


class IdempotencyService:
    def __init__(self, repository: IdempotencyRepository, ttl_seconds: int) -> None:
        self._repo = repository
        self._ttl = timedelta(seconds=ttl_seconds)

    async def claim(self, key: str, print_: str) -> None:
        """Claims the key for this request, or raises: Replay (same request already answered),
        IdempotencyConflict (the key was used with another request), or Conflict (the first
        request with this key is still running)."""
        now = clock.now()
        if await self._repo.insert_claim(key, print_, now, now + self._ttl):
            return
        seen = await self._repo.get(key)
        if seen is None:  # purged between the two statements: try once more
            if await self._repo.insert_claim(key, print_, now, now + self._ttl):
                return
            raise _in_progress()
        expired = seen.time_expires <= now
        abandoned = seen.status != COMPLETED and seen.time_created <= now - LEASE
        if expired or abandoned:
            if await self._repo.take_over(key, seen, print_, now, now + self._ttl):
                return
            raise _in_progress()
        if seen.fingerprint != print_:
            raise IdempotencyConflict(
                "This Idempotency-Key was already used with a different request (method, path "
                "or body); use a new key for a new request."
            )
        if seen.status != COMPLETED:
            raise _in_progress()
        raise Replay(_stored(seen))

    async def complete(self, key: str, response: StoredResponse) -> None:
        expires = clock.now() + self._ttl
        await self._repo.complete(key, response.status, response.headers, response.body, expires)

    async def release(self, key: str) -> None:
        await self._repo.release(key)


def _in_progress() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still being processed; retry shortly.",
        "idempotency_in_progress",
    )


def _stored(seen: StoredKey) -> StoredResponse:
    assert seen.response_status is not None
    assert seen.response_body is not None
    return StoredResponse(seen.response_status, seen.response_headers or {}, seen.response_body)
