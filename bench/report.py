"""Summaries of wrk runs: per-side tables, medians, target checks, and the results file."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import WrkResult

NOISY = 0.25  # CPU share busy before a run (servers idle) above which the run is flagged


@dataclass(frozen=True)
class Side:
    """One system under load (the floor or the service) and its measured runs."""

    name: str
    description: str
    runs: list[WrkResult]

    @property
    def median_rps(self) -> float:
        return statistics.median(r.requests_per_s for r in self.runs)

    @property
    def median_p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def median_p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def non_2xx(self) -> int:
        return sum(r.non_2xx for r in self.runs)

    @property
    def socket_errors(self) -> int:
        return sum(sum(r.socket_errors.values()) for r in self.runs)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "runs": [asdict(r) for r in self.runs],
            "median_requests_per_s": round(self.median_rps, 1),
            "median_p50_ms": round(self.median_p50_ms, 2),
            "median_p99_ms": round(self.median_p99_ms, 2),
            "non_2xx_total": self.non_2xx,
            "socket_errors_total": self.socket_errors,
        }


@dataclass(frozen=True)
class Check:
    """A pass/fail check printed under the tables (e.g. ratio ≥ 0.40)."""

    label: str
    value: float
    limit: float
    at_least: bool

    @property
    def holds(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        sign = "≥" if self.at_least else "≤"
        verdict = "PASS" if self.holds else "FAIL"
        return f"  {verdict}  {self.label} = {self.value:.2f} (target {sign} {self.limit:g})"


def _statuses(result: WrkResult) -> str:
    return " ".join(f"{s}:{n}" for s, n in sorted(result.statuses.items())) or "-"


def _busy(result: WrkResult) -> str:
    """CPU already busy just before the run (our servers idle); `!` marks a noisy run."""
    if result.busy_before is None:
        return "-"
    return f"{result.busy_before:.0%}" + ("!" if result.busy_before > NOISY else "")


def side_table(side: Side) -> str:
    header = f"{'run':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
    header += f"{'non-2xx':>8} {'sock err':>8} {'busy':>5}  statuses"
    lines = [f"{side.name}: {side.description}", header]
    for i, r in enumerate(side.runs, 1):
        errors = sum(r.socket_errors.values())
        lines.append(
            f"{i:>6} {r.requests_per_s:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.1f} "
            f"{r.non_2xx:>8} {errors:>8} {_busy(r):>5}  {_statuses(r)}"
        )
    lines.append(
        f"{'median':>6} {side.median_rps:>9.1f} {side.median_p50_ms:>8.2f} "
        f"{side.median_p99_ms:>8.2f} {'':>8} {side.non_2xx:>8} {side.socket_errors:>8}"
        f" {'':>5}  (totals)"
    )
    return "\n".join(lines)


def render(title: str, sides: Sequence[Side], ratio: float, checks: Sequence[Check]) -> str:
    parts = [f"== {title} ==", *(side_table(s) for s in sides)]
    parts.append(
        f"ratio median(service req/s) / median(floor req/s) = {ratio:.3f}\n"
        + "\n".join(t.line() for t in checks)
    )
    noisy = sum(1 for s in sides for r in s.runs if (r.busy_before or 0) > NOISY)
    if noisy:
        parts.append(
            f"NOISE: {noisy} run(s) marked ! started on a machine already more than "
            f"{NOISY:.0%} busy with other work; their figures are skewed."
        )
    errors = [s for s in sides if s.non_2xx or s.socket_errors]
    if errors:
        parts.append(
            "ERRORS: "
            + "; ".join(f"{s.name}: {s.non_2xx} non-2xx, {s.socket_errors} socket" for s in errors)
        )
    return "\n\n".join(parts)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class Outcome:
    """What a benchmark hands back to run.py: the printed report, the JSON, pass/fail."""

    text: str
    data: dict[str, Any]
    passed: bool
