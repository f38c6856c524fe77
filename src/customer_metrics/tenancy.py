"""The tenant every scoped service and repository receives: decided by the API key alone."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tenant:
    organization_id: int
    api_key_id: int
    # False when the key was recognised from this worker's memory of keys it has seen
    # active, without asking the database (api_keys/service.py, KnownKeys): the request may
    # then only answer through statements that check the key is still active themselves.
    key_checked: bool = True
    # The key's keyed hash, by which a remembered key is checked (set when key_checked is
    # False: the row's id alone could name another key after a restore).
    key_hash: str = ""
