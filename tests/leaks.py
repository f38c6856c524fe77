"""Every API key the test session creates, and the search for them wherever a key must never
be: log output, response bodies and headers, database dumps.

Keys are remembered as they are made: in this process by `new_key` itself (watched by
`tests/conftest.py`), in `customer-metrics` processes from what the command line prints
(`org create`, `key create`, and the key `serve` prints once on an empty embedded database).
Each xdist worker checks the keys of its own session."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx

from customer_metrics.api_keys import secrets

ISSUED: set[str] = set()
_KEY_SHAPED = re.compile(rf"{secrets.KEY_PREFIX}[A-Za-z0-9]{{{secrets.KEY_BODY_LENGTH}}}")
# `serve` shows the key it creates on an empty embedded database once, on stdout, by design.
BOOTSTRAP_NOTICE = re.compile(
    r"Created the first organization\. Its API key \(shown only this once\):\n(\S+)\n"
)


def remember(key: str) -> str:
    ISSUED.add(key)
    return key


def remember_printed(text: str) -> None:
    """Keys a `customer-metrics` process printed, as it does when it creates one."""
    ISSUED.update(_KEY_SHAPED.findall(text))


def leaked(data: str | bytes) -> list[str]:
    """The issued keys (by their prefix) that occur in `data`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return sorted(secrets.display_prefix(k) for k in ISSUED if k.encode() in raw)


def assert_no_key_in(data: str | bytes, where: str) -> None:
    found = leaked(data)
    assert not found, f"API key(s) {found} found in {where}"


async def check_response(response: httpx.Response) -> None:
    """An httpx response hook: no body (error or not) and no header carries a key."""
    await response.aread()
    request = response.request
    where = f"the {response.status_code} answer to {request.method} {request.url.path}"
    assert_no_key_in(response.content, where)
    assert_no_key_in(b"\n".join(b"%s: %s" % pair for pair in response.headers.raw), where)


RESPONSE_HOOKS = {"response": [check_response]}


def without_bootstrap_notice(server_output: str) -> str:
    """Server output minus the one display of a key that `serve` does on purpose; that key
    is remembered (so it is searched for everywhere else)."""
    for match in BOOTSTRAP_NOTICE.finditer(server_output):
        remember(match.group(1))
    return BOOTSTRAP_NOTICE.sub("", server_output)


def dump_database(url: str, sqlite_path: Path | None) -> bytes:
    """Everything the database holds: for SQLite the file (with its write-ahead log, where
    recent and deleted rows linger) and a SQL dump; for PostgreSQL, pg_dump."""
    if sqlite_path is not None:
        files = [sqlite_path, sqlite_path.with_name(sqlite_path.name + "-wal")]
        raw = b"".join(f.read_bytes() for f in files if f.exists())
        connection = sqlite3.connect(sqlite_path)
        try:
            return raw + "\n".join(connection.iterdump()).encode("utf-8", "surrogatepass")
        finally:
            connection.close()
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed to search a PostgreSQL database for keys"
    return subprocess.run(
        [pg_dump, "--no-owner", url], capture_output=True, check=True, timeout=60
    ).stdout
