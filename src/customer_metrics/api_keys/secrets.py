"""Key format (`cm_` + 40 base62) and the keyed hash that is all the database ever holds."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import string
from pathlib import Path

ALPHABET = string.ascii_letters + string.digits
KEY_PREFIX = "cm_"
KEY_BODY_LENGTH = 40
PREFIX_LENGTH = len(KEY_PREFIX) + 8
KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}[A-Za-z0-9]{{{KEY_BODY_LENGTH}}}$")
_KEY_ANYWHERE = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9]{{{KEY_BODY_LENGTH}}}")
REDACTED = "[redacted]"


def new_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(KEY_BODY_LENGTH))


def display_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def is_well_formed(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None


def redact_keys(text: str) -> str:
    """`text` with anything shaped like a key cut down to its prefix. Error messages and logs
    echo what callers send, and a caller may send its key where it does not belong (a body
    field, a query string, a customer id)."""
    if KEY_PREFIX not in text:
        return text
    return _KEY_ANYWHERE.sub(lambda key: display_prefix(key.group()) + REDACTED, text)


def hash_key(key: str, secret: bytes) -> str:
    # Keyed, so a leaked database alone cannot be used to test guesses offline.
    return hmac.digest(secret, key.encode("ascii"), hashlib.sha256).hex()  # one-shot, in C


def load_or_create_secret(configured: str, data_dir: Path) -> bytes:
    """`CM_SECRET_KEY` when set; else a random secret kept in `<data_dir>/secret` (0600).

    Every process that shares a database must share this secret: set CM_SECRET_KEY when the
    servers and the command line run on more than one machine."""
    if configured:
        return configured.encode()
    path = data_dir / "secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # Write aside, then link into place: two processes starting at once agree on one secret.
        tmp = data_dir / f".secret.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes().strip()
