"""Leader election on a coordination.k8s.io/v1 Lease, after client-go's `leaderelection`.

Only one replica reconciles at a time. The elector is one of the manager's parts:
`start()` begins a campaign in its own task: `acquire()` tries every `retry_period`
(jittered by up to 1.2x, so candidates spread out) until it holds the Lease and sets
`leading`; then `renew_loop()` rewrites `renewTime` every `retry_period`. A replica
that cannot renew within `renew_deadline` of its last successful renewal, or that sees
another holder, stops leading and sets `lost` (the manager then ends the process: it
never carries on without the Lease). `stop()` ends the campaign and releases the Lease,
so a successor takes over within about one `retry_period` instead of waiting for the
Lease to expire. That includes a Lease won by a write whose answer never came (the
campaign was cancelled while the write was in flight): client-go's release skips it, and
the successor then waits a full lease duration.

RBAC allows only `create`, and `get`/`update` on our one Lease: so every attempt is a
GET, a CREATE when there is none, else a PUT carrying the resourceVersion we read. A
409 means another candidate wrote first; we lose that round and look again.

Expiry, as client-go judges it: a Lease is taken to be expired when its record has not
changed for `leaseDurationSeconds` *by our own monotonic clock*, counted from the moment
we saw it change (`observed_time`). We never compare `renewTime` with our wall clock:
nodes' clocks differ by seconds, and a skewed clock would either steal a live Lease or
wait forever on a dead one. The price: a fresh candidate waits one full lease duration
even when the holder died long ago. An empty `holderIdentity` means a released, free Lease.

Timings (controller-runtime's defaults, 15/10/2 s, in runtime/defaults.py): lease_duration >
renew_deadline > 1.2 * retry_period > 0. A leader gives up `renew_deadline` after the
start of its last successful renewal, while others wait `lease_duration` after seeing
that renewal: the gap (5 s) absorbs request latency and clock-rate drift, so two
leaders never overlap.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import socket
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from virtualservice_operator.kube.client import (
    JSON,
    LEASES,
    ApiError,
    Conflict,
    KubeClient,
    NotFound,
)
from virtualservice_operator.runtime.clock import Clock, RealClock
from virtualservice_operator.runtime.defaults import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD
from virtualservice_operator.runtime.metrics import OperatorMetrics
from virtualservice_operator.runtime.tasks import cancel_and_wait

log = structlog.get_logger("leader")


class NotLeading(Exception):
    """The Lease is lost (or was never held): no write may be sent or reported."""


JITTER_FACTOR = 1.2  # client-go's: acquire retries wait retry_period * [1, 2.2)


def _default_identity() -> str:
    # The suffix keeps two processes apart even with the same pod name or hostname.
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time() -> str:
    """Wall-clock MicroTime for the record (read by humans and kubectl, never for expiry)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    name: str
    identity: str = field(default_factory=_default_identity)
    lease_duration: float = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD

    def __post_init__(self) -> None:
        if self.retry_period <= 0:
            raise ValueError(f"retry_period ({self.retry_period}) must be greater than 0")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}) must be greater than "
                f"{JITTER_FACTOR} * retry_period ({self.retry_period})"
            )
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration}) must be greater than "
                f"renew_deadline ({self.renew_deadline})"
            )
        if not self.identity:
            raise ValueError("identity must not be empty")


class LeaderElector:
    """A runnable of the manager (see the module docstring); not itself leader-only."""

    needs_leader = False

    def __init__(
        self,
        client: KubeClient,
        config: LeaderElectionConfig,
        *,
        clock: Clock | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.config = config
        self._client = client
        self._clock = clock or RealClock()
        self.leading = asyncio.Event()  # set while we hold the Lease
        self.lost = asyncio.Event()  # set once the Lease, having been won, is lost
        self._campaign: asyncio.Task[None] | None = None
        gauge = metrics.leader_election_master_status if metrics else None
        self._gauge = gauge.labels(name=config.name) if gauge else None
        self._observed_leader = ""
        self._observed_spec: dict[str, Any] | None = None
        self._observed_time = 0.0  # our clock, when the record last changed
        self._renewed_at = 0.0  # our clock, start of our last successful write
        # True from the start of a write of the Lease until its answer: a write cancelled
        # in between may have made us the holder without our knowing.
        self._write_in_doubt = False
        self._log = log.bind(lease=f"{config.namespace}/{config.name}", identity=config.identity)
        self._set_leading(False)

    @property
    def observed_leader(self) -> str:
        """The holder in the last record seen ("" when free or not yet seen)."""
        return self._observed_leader

    async def acquire(self) -> None:
        """Return once we hold the Lease, trying every retry_period (jittered)."""
        self._log.info("attempting to acquire leader lease")
        while not await self._try_before(self._clock.now() + self.config.renew_deadline):
            jitter = 1 + random.random() * JITTER_FACTOR
            await self._clock.sleep(self.config.retry_period * jitter)
        self._set_leading(True)
        self._log.info("became leader")

    async def renew_loop(self) -> None:
        """Renew every retry_period; return when the Lease is lost (or released)."""
        c = self.config
        while self.leading.is_set():
            await self._clock.sleep(c.retry_period)
            deadline = self._renewed_at + c.renew_deadline
            while self.leading.is_set() and not await self._try_before(deadline):
                other = self._observed_leader not in ("", c.identity)
                if other or self._clock.now() >= deadline:
                    self._set_leading(False)
                    reason = "held by another" if other else "renew deadline passed"
                    self._log.warning("lost leadership", reason=reason, holder=self.observed_leader)
                    return
                await self._clock.sleep(min(c.retry_period, deadline - self._clock.now()))

    async def start(self) -> None:
        """Begin the campaign (acquire, then renew until lost) and return at once."""
        if self._campaign is None:
            self._campaign = asyncio.create_task(self._campaign_for_lease(), name="leader election")

    async def stop(self) -> None:
        """End the campaign and hand the Lease back if we hold it."""
        await cancel_and_wait(self._campaign)
        await self.release()

    async def _campaign_for_lease(self) -> None:
        await self.acquire()
        await self.renew_loop()
        self.lost.set()

    async def release(self) -> None:
        """Hand the Lease back (holder "", 1 s duration) so a successor need not wait.

        Best effort (errors are logged). Stop renew_loop first, as stop() does: a renewal
        in flight could otherwise land after the release and take the Lease back.
        """
        if not self.leading.is_set() and not self._write_in_doubt:
            return
        self._write_in_doubt = False
        self._set_leading(False)  # first, so that a running renew_loop stops
        c = self.config
        try:
            lease = await self._client.get(LEASES, c.namespace, c.name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != c.identity:
                return
            now = _micro_time()
            free = dict(holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now)
            await self._client.replace(LEASES, c.namespace, c.name, {**lease, "spec": spec | free})
        except ApiError as e:
            self._log.error("failed to release lease", error=str(e))
            return
        self._log.info("released leader lease")

    async def _try_before(self, deadline: float) -> bool:
        """One tryAcquireOrRenew, abandoned (False) if it has not answered by `deadline`."""
        remaining = deadline - self._clock.now()
        if remaining <= 0:
            return False
        attempt = asyncio.ensure_future(self._try_acquire_or_renew())
        timer = asyncio.ensure_future(self._clock.sleep(remaining))
        try:
            await asyncio.wait({attempt, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            attempt.cancel()  # no-op when done
        return attempt.done() and not attempt.cancelled() and attempt.result()

    async def _try_acquire_or_renew(self) -> bool:
        """Acquire or renew the Lease once; True if we hold it now."""
        c = self.config
        now = self._clock.now()
        stamp = _micro_time()
        # 1. Obtain the Lease, or create it with us as the holder.
        try:
            lease = await self._client.get(LEASES, c.namespace, c.name)
        except NotFound:
            new: JSON = {
                "apiVersion": LEASES.api_version,
                "kind": LEASES.kind,
                "metadata": {"name": c.name, "namespace": c.namespace},
                "spec": self._spec(acquired=stamp, renewed=stamp, transitions=0),
            }
            try:
                created = await self._write(self._client.create(LEASES, c.namespace, new))
            except ApiError as e:  # AlreadyExists: another candidate created it first
                self._log.info("error initially creating leader lease", error=str(e))
                return False
            self._observe(created, now)
            self._renewed_at = now
            return True
        except ApiError as e:
            self._log.warning("error retrieving leader lease", error=str(e))
            return False

        # 2. Note when the record last changed (our clock) and who holds it; stop if
        #    someone else holds it and it has not expired. "" is a released Lease.
        self._observe(lease, now)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or c.lease_duration
        if holder not in ("", c.identity) and now < self._observed_time + duration:
            return False

        # 3. Fill in the record: a renewal keeps acquireTime and leaseTransitions; a
        #    new holder stamps acquireTime and counts one more transition.
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == c.identity:
            new_spec = self._spec(spec.get("acquireTime") or stamp, stamp, transitions)
        else:
            new_spec = self._spec(stamp, stamp, transitions + 1)

        # 4. Write it with the resourceVersion we read: 409 = someone else wrote first.
        try:
            body = {**lease, "spec": new_spec}
            updated = await self._write(self._client.replace(LEASES, c.namespace, c.name, body))
        except Conflict as e:
            self._log.info("conflict updating leader lease", error=str(e))
            return False
        except ApiError as e:
            self._log.warning("error updating leader lease", error=str(e))
            return False
        self._observe(updated, now)
        self._renewed_at = now
        return True

    async def _write(self, request: Awaitable[JSON]) -> JSON:
        """Await a create or replace of the Lease. Cancelled before its answer, the write
        stays in doubt: it may have landed, so release() looks."""
        self._write_in_doubt = True
        try:
            answer = await request
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._write_in_doubt = False
            raise
        self._write_in_doubt = False
        return answer

    def _spec(self, acquired: str, renewed: str, transitions: int) -> JSON:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": math.ceil(self.config.lease_duration),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: JSON, now: float) -> None:
        spec = lease.get("spec") or {}
        if spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_time = now
        holder = str(spec.get("holderIdentity") or "")
        if holder != self._observed_leader:
            self._observed_leader = holder
            if holder:  # a released Lease has no leader to announce
                self._log.info(f"new leader observed {holder}", leader=holder)

    def _set_leading(self, leading: bool) -> None:
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
        if self._gauge is not None:
            self._gauge.set(1 if leading else 0)
