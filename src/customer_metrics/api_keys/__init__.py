"""API keys: issue, list, revoke, and resolve a presented key to its tenant."""
