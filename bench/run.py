"""`make bench`: run the benchmarks on PostgreSQL, print their tables, write bench/results/.

    .venv/bin/python bench/run.py [BENCHMARK ...] [--duration 10] [--connections 64]
        [--runs 3] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]

Each benchmark is a module with `run(Options) -> Outcome`; add new ones to BENCHMARKS.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

import agent_view
import batch_ingest
import metric_create
import queries
import value_write
from harness import BenchError, Options, log
from report import Outcome

BENCHMARKS: dict[str, Callable[[Options], Outcome]] = {
    metric_create.NAME: metric_create.run,
    value_write.NAME: value_write.run,
    batch_ingest.NAME: batch_ingest.run,
    agent_view.NAME: agent_view.run,
    queries.NAME: queries.run,
}


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str]) -> tuple[list[str], Options, bool]:
    defaults = Options()
    parser = argparse.ArgumentParser(description="Benchmarks against their floors.")
    parser.add_argument(
        "benchmarks", nargs="*", choices=[[], *BENCHMARKS], help="default: all of them"
    )
    parser.add_argument("--duration", type=int, default=defaults.duration, help="seconds a run")
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="wrk threads")
    parser.add_argument("--runs", type=int, default=defaults.runs, help="runs for each side")
    parser.add_argument(
        "--warmup", type=int, default=defaults.warmup, help="unmeasured seconds per side first"
    )
    parser.add_argument(
        "--pg-url", default=defaults.pg_url, help="admin URL; bench databases are made through it"
    )
    parser.add_argument(
        "--service-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service (e.g. CM_LOG_LEVEL=warning); repeatable",
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="load kept data sets again (queries keeps its database between runs)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed (not only on errors)"
    )
    args = parser.parse_args(argv)
    options = Options(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        pg_url=args.pg_url,
        service_env=dict(args.service_env),
        regenerate=args.regenerate,
    )
    return list(args.benchmarks) or list(BENCHMARKS), options, args.strict


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # Unwind normally, so every started server's process group is stopped on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    names, options, strict = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    failed = False
    for name in names:
        try:
            outcome = BENCHMARKS[name](options)
        except BenchError as error:
            log(f"{name}: could not run: {error}")
            return 2
        print(outcome.text, flush=True)
        print(flush=True)
        failed = failed or not outcome.passed
    return 1 if failed and strict else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
