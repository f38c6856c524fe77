"""Tables for batch_ingest: values/s per run and side, medians, RSS, target checks."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from batch_load import LoadResult
from report import NOISY, Check


@dataclass
class SideRuns:
    """One system (COPY floor, upsert floor, service on PostgreSQL or SQLite) and its runs."""

    name: str
    description: str
    runs: list[LoadResult] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.values_per_s for r in self.runs) if self.runs else 0.0

    @property
    def cpu_us_per_value(self) -> float | None:
        """Median over runs of the machine's CPU µs per value stored (None without /proc)."""
        found = [r.cpu_us_per_value for r in self.runs]
        known = [v for v in found if v is not None]
        return statistics.median(known) if known else None

    @property
    def errors(self) -> int:
        """Rejected items plus batches not answered 200 (the floor has none)."""
        bad = sum(
            n
            for r in self.runs
            for s, n in r.statuses.items()
            if s not in ("200", "copy", "upsert")
        )
        return bad + sum(r.rejected for r in self.runs)

    def summary(self) -> dict[str, Any]:
        runs = [{**asdict(r), "values_per_s": round(r.values_per_s, 1)} for r in self.runs]
        return {
            "name": self.name,
            "description": self.description,
            "runs": runs,
            "median_values_per_s": round(self.median, 1),
            "median_cpu_us_per_value": _rounded(self.cpu_us_per_value),
            "errors": self.errors,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _busy(result: LoadResult) -> str:
    if result.busy_before is None:
        return "-"
    return f"{result.busy_before:.0%}" + ("!" if result.busy_before > NOISY else "")


def side_table(side: SideRuns) -> str:
    header = f"{'run':>6} {'values/s':>10} {'values':>8} {'batches':>7} {'s':>6} "
    header += f"{'p50 ms':>8} {'max ms':>8} {'rejected':>8} {'cpu µs/v':>8} {'busy':>5}  statuses"
    lines = [f"{side.name}: {side.description}", header]
    for i, r in enumerate(side.runs, 1):
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(r.statuses.items())) or "-"
        lines.append(
            f"{i:>6} {r.values_per_s:>10,.0f} {r.values:>8} {r.batches:>7} {r.seconds:>6.2f} "
            f"{r.batch_p50_ms:>8.0f} {r.batch_max_ms:>8.0f} {r.rejected:>8} "
            f"{_cpu(r.cpu_us_per_value):>8} {_busy(r):>5}  {statuses}"
        )
    blank = " " * 50
    lines.append(f"{'median':>6} {side.median:>10,.0f} {blank}{_cpu(side.cpu_us_per_value):>8}")
    return "\n".join(lines)


def render(
    title: str,
    sides: Sequence[SideRuns],
    ratio: float,
    rss: Mapping[str, Mapping[str, Any]],
    checks: Sequence[Check],
    context: Sequence[str] = (),
) -> str:
    parts = [f"== {title}: POST /external/v1/customers/metrics/values, 10,000-item batches =="]
    parts += [side_table(s) for s in sides]
    parts.append(
        "\n".join(
            f"peak RSS ({name}): VmHWM {r['vm_hwm_before_mb']} MB at start → "
            f"{r['vm_hwm_after_mb']} MB after one {r['body_bytes'] / 2**20:.2f} MiB batch "
            f"of {r['items']} items ({r['batch_seconds']} s)"
            for name, r in rss.items()
        )
    )
    parts.append(
        f"ratio median(service values/s) / median(floor values/s) = {ratio:.3f}\n"
        + "".join(f"{line}\n" for line in context)
        + "\n".join(c.line() for c in checks)
    )
    noisy = sum(1 for s in sides for r in s.runs if (r.busy_before or 0) > NOISY)
    if noisy:
        parts.append(
            f"NOISE: {noisy} run(s) marked ! started on a machine already more than "
            f"{NOISY:.0%} busy with other work; their figures are skewed."
        )
    bad = [s for s in sides if s.errors]
    if bad:
        parts.append("ERRORS: " + "; ".join(f"{s.name}: {s.errors}" for s in bad))
    return "\n\n".join(parts)
