"""The printed outcome: the faults applied (trigger, hold, recovery, alert, problems) and the
checks (rows compared, differences)."""

from __future__ import annotations

from collections.abc import Sequence

from tests.chaos.checks import Check
from tests.chaos.faults import NO_ALERT, FaultResult


def fault_table(results: Sequence[FaultResult]) -> str:
    lines = [
        f"{'#':>3} {'fault':<17} {'feed':<5} {'trigger':<38} {'hold s':>6} {'stage':<9} "
        f"{'recovery s':>10} {'alert':<30} problems"
    ]
    for number, r in enumerate(results, 1):
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        alert = r.alert.fingerprint if r.alert else NO_ALERT.get(r.kind, "(no rule)")
        problems = "; ".join(r.problems + [f"restarted: {c[:120]}" for c in r.crashes]) or "none"
        lines.append(
            f"{number:>3} {r.kind:<17} {r.feed_at:<5} {r.trigger[:38]:<38} {r.hold_s:>6.1f} "
            f"{r.stage:<9} {recovery:>10} {alert:<30} {problems}"
        )
    return "\n".join(lines)


def check_table(checks: Sequence[Check]) -> str:
    lines = [f"{'check':<28} {'compared':>9} {'differences':>11}  detail"]
    for c in checks:
        detail = " | ".join(c.notes)
        lines.append(f"{c.name:<28} {c.compared:>9} {c.differences:>11}  {detail}")
    return "\n".join(lines)


def render(
    variant: str, seed: int, results: Sequence[FaultResult], checks: Sequence[Check], wall_s: float
) -> str:
    verdict = (
        "HELD: everything held" if held(results, checks) else "FAILED: see problems and differences"
    )
    crashes = [c for r in results for c in r.crashes]
    restarted = ["services that ended on their own and were restarted:", *crashes, ""]
    return "\n".join(
        [
            f"chaos {variant} seed {seed}: {len(results)} faults in {wall_s:.0f}s wall time",
            "",
            fault_table(results),
            "",
            check_table(checks),
            "",
            *(restarted if crashes else []),
            verdict,
        ]
    )


def held(results: Sequence[FaultResult], checks: Sequence[Check]) -> bool:
    return all(not r.problems for r in results) and all(c.ok for c in checks)
