"""What a lease backend does, and the timings every backend shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class NotLeaderError(RuntimeError):
    """Raised where an effect needs the lease and this process does not hold it (any more)."""


class LeadershipLostError(RuntimeError):
    """The lease was lost while leading: the service stops and comes back as a standby."""


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Lease 10 s, renewed every 3 s, the leader stops acting 7 s after its last successful
    renewal (before anyone else may take over at 10 s), standbys try every 1 s.

    A standby takes over at most ``takeover_bound_s`` after the leader died without releasing
    (kill -9, node loss, SIGSTOP); a leader that stops cleanly releases the lease and a standby
    takes over within ``retry_s``.
    """

    lease_s: float = 10.0
    renew_s: float = 3.0
    renew_deadline_s: float = 7.0
    retry_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.renew_s < self.renew_deadline_s < self.lease_s:
            raise ValueError("lease timing needs 0 < renew_s < renew_deadline_s < lease_s")
        if self.retry_s <= 0:
            raise ValueError("retry_s must be positive")

    @property
    def takeover_bound_s(self) -> float:
        """Worst case from the leader's death to a standby leading: the lease runs out, then one
        poll; the Kubernetes backend observes expiry locally, so it adds one more poll."""
        return self.lease_s + 2 * self.retry_s


class Lease(Protocol):
    """One named lease in a shared store, held by ``identity``."""

    name: str
    identity: str

    async def acquire_or_renew(self) -> int | None:
        """Take the lease when it is free (or expired), extend it when this identity holds it.

        Returns the fencing token of this holding (it grows with every change of holder), or
        None when another identity holds the lease.
        """
        ...

    async def release(self) -> None:
        """Give the lease up when this identity holds it (a clean stop: no wait for expiry)."""
        ...
