"""Configuration: one settings class read from `CM_` environment variables (and `.env`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".customer-metrics")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CM_", env_file=".env", extra="ignore")

    # Plain `DATABASE_URL` is honoured too; empty means the embedded SQLite file.
    database_url: str = Field(
        default="", validation_alias=AliasChoices("CM_DATABASE_URL", "DATABASE_URL")
    )
    # `migrate` connects with this one when set (the tables' owner), while the service
    # connects with database_url (on PostgreSQL, a role that does not own them).
    migration_database_url: str = ""
    data_dir: Path = DEFAULT_DATA_DIR
    # Keyed-hash secret for API keys. When unset it is generated once into data_dir/secret.
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # On SIGTERM: how long requests in flight may take to finish before they are cancelled.
    shutdown_timeout_seconds: int = Field(default=30, ge=0)
    log_level: str = "info"
    pool_size: int = 20
    max_body_bytes: int = 10 * 1024 * 1024
    max_name_length: int = 100
    max_description_length: int = 2000
    max_string_value_length: int = 1000
    max_customer_id_length: int = 255
    idempotency_ttl_seconds: int = 86_400
    idempotency_purge_interval_seconds: int = 600
    # How often the series rollup takes in the customers changed since (queries/fold.py).
    # Each fold costs per marked customer: every 2 s it took a quarter of the single-write
    # throughput (1,000 customers written all the time); every 10 s, none measurable.
    rollup_fold_interval_seconds: float = 10.0
    # A token bucket per API key: PER_SECOND tokens a second, at most BURST at once; 0 turns
    # it off. Sized as a backstop above what one worker serves (docs/api.md, rate limits).
    rate_limit_per_second: int = Field(default=10_000, ge=0)
    rate_limit_burst: int = Field(default=20_000, ge=1)
    # Shared buckets for every worker of every server; empty = each worker keeps its share.
    redis_url: str = ""
    # Per worker process: above it a request is answered 503 at once; 0 turns it off.
    max_requests_in_flight: int = Field(default=256, ge=0)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'customer-metrics.db').as_posix()}"

    @property
    def resolved_migration_url(self) -> str:
        return self.migration_database_url or self.resolved_database_url


def get_settings() -> Settings:
    return Settings()
