"""Rate limits per API key: a token bucket (GCRA, from throttled-py) per key, shared through
Redis when configured, and the RateLimit / RateLimit-Policy fields of
draft-ietf-httpapi-ratelimit-headers-11 on every authenticated response."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta

import throttled
from starlette.types import Scope
from throttled.asyncio import (
    BaseRateLimiter,
    RateLimiterRegistry,
    RateLimiterType,
    RateLimitResult,
    RedisStore,
    per_duration,
)
from throttled.exceptions import StoreUnavailableError

from customer_metrics.errors import RateLimited
from customer_metrics.settings import Settings

log = logging.getLogger("customer_metrics.ratelimit")

# The edge middleware adds these header pairs, left in the scope here, to the response.
HEADERS_SCOPE_KEY = "customer_metrics.rate_limit_headers"
POLICY_NAME = "per-key"
# Keys tracked per worker; past it the least recently seen key starts from a full bucket.
MEMORY_KEYS = 65_536
# A Redis that answers in more than this is treated as down (it answers in well under 1 ms).
REDIS_TIMEOUT_SECONDS = 0.25
# While Redis is down, each worker uses its local share and tries Redis again this often.
REDIS_RETRY_SECONDS = 2.0

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Policy:
    """What one bucket enforces: `burst` requests at once, refilled at `limit` tokens every
    `period_seconds`."""

    limit: int
    period_seconds: int
    burst: int

    @property
    def window_seconds(self) -> int:
        # The time to refill a whole burst: a client that keeps to `burst` requests in any
        # window this long is never refused. Whole seconds (the draft has no fractions).
        return max(1, math.ceil(self.burst * self.period_seconds / self.limit))

    def field(self) -> bytes:
        return f'"{POLICY_NAME}";q={self.burst};w={self.window_seconds}'.encode()


class Bucket:
    """One policy in one store: `hit` spends the key's token when there is one."""

    def __init__(self, policy: Policy, store: RedisStore, namespace: str) -> None:
        quota = per_duration(timedelta(seconds=policy.period_seconds), policy.limit, policy.burst)
        limiter_class = RateLimiterRegistry.get(RateLimiterType.GCRA.value)
        self._limiter: BaseRateLimiter = limiter_class(quota, store, key_prefix=namespace)
        self._policy_header = (b"ratelimit-policy", policy.field())

    async def hit(self, key: str) -> tuple[Headers, int | None]:
        """The response's RateLimit fields, and the seconds to wait when it is refused."""
        return _decided(await self._limiter.limit(key), self._policy_header)


class LocalBucket:
    """A bucket in this worker's memory. throttled's synchronous limiter: spending a token
    is a few arithmetic steps under an uncontended lock, with nothing to wait for, so it is
    called directly (the asynchronous one adds an asyncio lock and three coroutines to every
    request for the same steps)."""

    def __init__(self, policy: Policy, namespace: str) -> None:
        quota = per_duration(timedelta(seconds=policy.period_seconds), policy.limit, policy.burst)
        limiter_class = throttled.RateLimiterRegistry.get(RateLimiterType.GCRA.value)
        store = throttled.MemoryStore(options={"MAX_SIZE": MEMORY_KEYS})
        self._limiter: throttled.BaseRateLimiter = limiter_class(quota, store, key_prefix=namespace)
        self._policy_header = (b"ratelimit-policy", policy.field())

    def hit(self, key: str) -> tuple[Headers, int | None]:
        return _decided(self._limiter.limit(key), self._policy_header)


def _decided(
    result: RateLimitResult, policy_header: tuple[bytes, bytes]
) -> tuple[Headers, int | None]:
    """The response's RateLimit fields, and the seconds to wait when it is refused."""
    state = result.state
    if result.limited:
        retry_after = max(1, _seconds(state.retry_after))
        # Nothing is available before Retry-After, so the effective window ends with it.
        current = f'"{POLICY_NAME}";r=0;t={retry_after}'
        return ((b"ratelimit", current.encode()), policy_header), retry_after
    current = f'"{POLICY_NAME}";r={state.remaining};t={_seconds(state.reset_after)}'
    return ((b"ratelimit", current.encode()), policy_header), None


def _seconds(duration: float) -> int:
    # Whole seconds, rounded up; to the microsecond first, so that float noise such as
    # (now + 1.0) - now = 1.0000000000009 does not make a second into two.
    return math.ceil(round(duration, 6))


class RateLimiter:
    """Shared buckets in Redis when configured; else, and while Redis is down, this worker's
    share of the limit (rate and burst divided by the number of workers), so that a server
    never admits more than the limit however its requests fall on its workers."""

    def __init__(self, settings: Settings, secret: bytes) -> None:
        rate, burst, workers = (
            settings.rate_limit_per_second,
            settings.rate_limit_burst,
            max(1, settings.workers),
        )
        # Bucket names carry a hash of the secret, which the servers of one deployment share:
        # another deployment on the same Redis (whose key ids would collide) never meets them.
        digest = hmac.new(secret, b"rate-limit", hashlib.sha256).hexdigest()[:16]
        namespace = f"cm:{digest}"
        share = Policy(limit=rate, period_seconds=workers, burst=max(1, burst // workers))
        self.local = LocalBucket(share, namespace)
        self.shared: Bucket | None = None
        if settings.redis_url:
            store = RedisStore(
                server=settings.redis_url,
                options={
                    "SOCKET_TIMEOUT": REDIS_TIMEOUT_SECONDS,
                    "SOCKET_CONNECT_TIMEOUT": REDIS_TIMEOUT_SECONDS,
                },
            )
            self.shared = Bucket(Policy(rate, 1, burst), store, namespace)
        self._redis_down_until = 0.0
        self._redis_down = False

    async def admit(self, scope: Scope, api_key_id: int) -> None:
        """Spends one token of the key's bucket, or raises 429 `rate_limited`."""
        headers, retry_after = await self._hit(str(api_key_id))
        scope[HEADERS_SCOPE_KEY] = headers
        if retry_after is not None:
            raise RateLimited(
                f"Too many requests for this API key; retry in {retry_after} s.", retry_after
            )

    async def _hit(self, key: str) -> tuple[Headers, int | None]:
        if self.shared is not None and time.monotonic() >= self._redis_down_until:
            try:
                decided = await self.shared.hit(key)
            except StoreUnavailableError as error:
                self._redis_failed(error)
            else:
                if self._redis_down:
                    self._redis_down = False
                    log.info("rate limits are shared through Redis again")
                return decided
        return self.local.hit(key)

    def _redis_failed(self, error: StoreUnavailableError) -> None:
        # Fail over to the local share, not open and not 503: the API stays up and a key still
        # meets a limit (per server until Redis is back). One log line per outage.
        self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        if not self._redis_down:
            self._redis_down = True
            log.warning(
                "Redis is unreachable for rate limits (%s); each worker enforces its own share "
                "until it is back",
                error.__cause__ or error,
            )


def build_rate_limiter(settings: Settings, secret: bytes) -> RateLimiter | None:
    if settings.rate_limit_per_second == 0:
        return None
    return RateLimiter(settings, secret)
