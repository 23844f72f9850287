"""Leader election against a real kube-apiserver, with short timings (3 s / 2 s / 0.5 s).

Each test uses its own Lease name in a fresh namespace. Waits are conditions polled
against a deadline; elapsed times are measured and checked against the bounds that
the design promises (takeover after a crash ~ lease_duration, after a release ~ one
retry_period, a stolen Lease noticed on the next renewal).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import waiting
from tests.integration.conftest import Namespaces
from virtualservice_operator.kube.client import LEASES, KubeClient
from virtualservice_operator.runtime.leader import LeaderElectionConfig, LeaderElector
from virtualservice_operator_dev.controlplane import ControlPlane

pytestmark = pytest.mark.integration

LEASE, RENEW, RETRY = 3.0, 2.0, 0.5
MAX_RETRY = RETRY * 2.2  # acquire retries are jittered up to 1.2x on top
MARGIN = 1.0  # request latency and loop scheduling on a busy test machine


@dataclass
class Env:
    """One test's namespace, Lease name, admin client and background tasks."""

    cp: ControlPlane
    ns: str
    lease: str
    client: KubeClient
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    electors: list[LeaderElector] = field(default_factory=list)

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        self.tasks.append(asyncio.create_task(coro))
        return self.tasks[-1]

    def elector(
        self,
        identity: str,
        client: KubeClient | None = None,
        **kw: Any,
    ) -> LeaderElector:
        config = LeaderElectionConfig(
            namespace=self.ns,
            name=self.lease,
            identity=identity,
            lease_duration=LEASE,
            renew_deadline=RENEW,
            retry_period=RETRY,
        )
        self.electors.append(LeaderElector(client or self.client, config, **kw))
        return self.electors[-1]

    async def kubectl(self, *args: str) -> str:
        # In a thread: a blocking subprocess would stall the electors' renewals.
        return (await asyncio.to_thread(self.cp.kubectl, *args)).stdout

    async def spec(self) -> dict[str, Any]:
        # Through the admin client, not kubectl: a kubectl process can take over a second
        # to start on a loaded machine, longer than a renewal (RETRY) to poll.
        return dict((await self.client.get(LEASES, self.ns, self.lease))["spec"])

    async def next_renewal(self, renew_time: str) -> dict[str, Any]:
        """The Lease's spec once its renewTime has moved on from `renew_time`."""
        async with asyncio.timeout(RENEW + MARGIN):
            while (spec := await self.spec())["renewTime"] == renew_time:
                pass
        return spec


@pytest.fixture
async def env(control_plane: ControlPlane, namespaces: Namespaces) -> AsyncIterator[Env]:
    client = KubeClient.from_kubeconfig(str(control_plane.admin_kubeconfig))
    e = Env(control_plane, namespaces.default, f"leader-{uuid.uuid4().hex[:8]}", client)
    yield e
    for task in e.tasks:
        task.cancel()
    await asyncio.gather(*e.tasks, return_exceptions=True)
    for elector in e.electors:
        await elector.stop()
    await client.close()


# Each look at the condition may be a request to the API server: not in a tight loop.
until = functools.partial(waiting.until, poll=0.02)


async def test_two_electors_one_leader(env: Env) -> None:
    a, b = env.elector("a"), env.elector("b")
    for e in (a, b):
        await e.start()
    await until(lambda: a.leading.is_set() or b.leading.is_set(), within=5)
    leader, follower = (a, b) if a.leading.is_set() else (b, a)
    holder = leader.config.identity
    await until(lambda: follower.observed_leader == holder, within=5)

    table = (await env.kubectl("get", "lease", "-n", env.ns)).splitlines()
    assert table[0].split()[:2] == ["NAME", "HOLDER"]
    assert table[1].split()[:2] == [env.lease, holder]
    # Several renewals later: still exactly one leader, and never a transition.
    spec = await env.spec()
    for _ in range(3):
        spec = await env.next_renewal(spec["renewTime"])
        assert leader.leading.is_set() and not follower.leading.is_set()
        assert spec["holderIdentity"] == holder and spec["leaseTransitions"] == 0
    assert spec["leaseDurationSeconds"] == 3


async def test_crashed_leader_is_replaced_after_lease_duration(env: Env) -> None:
    a, b = env.elector("a"), env.elector("b")
    await asyncio.wait_for(a.acquire(), 5)
    renewing_a = env.start(a.renew_loop())
    await b.start()
    await until(lambda: b.observed_leader == "a", within=5)

    renewing_a.cancel()  # like SIGKILL: no release, the Lease just stops being renewed
    killed = time.monotonic()
    await asyncio.gather(renewing_a, return_exceptions=True)
    await until(b.leading.is_set, within=LEASE + MAX_RETRY + MARGIN + 2)
    took = time.monotonic() - killed
    # No sooner than a lease duration after a's last renewal (at most one retry period
    # before the kill); no later than a lease duration plus one jittered retry.
    print(f"\ntakeover {took:.2f}s after the leader died (lease {LEASE}s)")
    assert LEASE - RETRY - 0.2 <= took <= LEASE + MAX_RETRY + MARGIN, took
    spec = await env.spec()
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


@pytest.mark.parametrize("how", ["release", "stop"])
async def test_released_lease_is_taken_over_within_a_retry(env: Env, how: str) -> None:
    a, b = env.elector("a"), env.elector("b")
    if how == "stop":
        await a.start()
    else:
        await a.acquire()
    await until(a.leading.is_set, within=5)
    await b.start()
    await until(lambda: b.observed_leader == "a", within=5)

    started = time.monotonic()
    if how == "stop":
        await a.stop()  # graceful shutdown: the campaign ends and the Lease is released
    else:
        await a.release()
    await until(b.leading.is_set, within=LEASE)
    took = time.monotonic() - started
    print(f"\ntakeover {took:.2f}s after {how} (retry {RETRY}s, lease {LEASE}s)")
    assert took <= MAX_RETRY + 0.5, took  # about one retry, well below the lease duration
    spec = await env.spec()
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


async def test_stolen_lease_ends_the_reign(env: Env) -> None:
    a = env.elector("a")
    await a.start()
    await until(a.leading.is_set, within=5)

    patch = json.dumps({"spec": {"holderIdentity": "thief"}})
    await env.kubectl("patch", "lease", env.lease, "-n", env.ns, "--type=merge", "-p", patch)
    stolen = time.monotonic()
    await asyncio.wait_for(a.lost.wait(), RENEW)
    took = time.monotonic() - stolen
    print(f"\nstolen lease noticed after {took:.2f}s (retry {RETRY}s)")
    assert took <= RETRY + 0.5, took  # the next renewal sees it: no waiting for a deadline
    assert not a.leading.is_set() and a.observed_leader == "thief"
    assert (await env.spec())["holderIdentity"] == "thief"


async def test_service_account_with_minimal_role_suffices(env: Env, tmp_path: Path) -> None:
    ns, sa = env.ns, "elector"
    leases = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "leader-election", "namespace": ns},
        "rules": [
            # create cannot be limited by name: the object has no name at authorization
            {**leases, "verbs": ["create"]},
            {**leases, "resourceNames": [env.lease], "verbs": ["get", "update"]},
        ],
    }
    cp = env.cp
    cp.kubectl("create", "serviceaccount", sa, "-n", ns)
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(role))
    binding = ("rolebinding", "leader-election", "--role=leader-election")
    cp.kubectl("create", *binding, f"--serviceaccount={ns}:{sa}", "-n", ns)
    as_sa = f"--as=system:serviceaccount:{ns}:{sa}"
    for verb in ("list", "watch", "patch", "delete"):
        answer = cp.kubectl("auth", "can-i", verb, "leases", "-n", ns, as_sa, check=False)
        assert answer.stdout.strip() == "no", verb
    kubeconfig = cp.service_account_kubeconfig(ns, sa, tmp_path / "sa.kubeconfig")

    clients = [KubeClient.from_kubeconfig(str(kubeconfig)) for _ in range(2)]
    try:
        a, b = env.elector("a", clients[0]), env.elector("b", clients[1])
        await asyncio.wait_for(a.acquire(), 5)  # GET (404), CREATE
        renewing = env.start(a.renew_loop())  # GET, UPDATE, again and again
        env.start(b.acquire())  # GET: held by a
        await until(lambda: b.observed_leader == "a", within=5)
        spec = await env.next_renewal((await env.spec())["renewTime"])
        assert a.leading.is_set() and spec["holderIdentity"] == "a"
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        await a.release()  # GET, UPDATE
        await until(b.leading.is_set, within=LEASE)  # GET, UPDATE by the successor
        assert (await env.spec())["holderIdentity"] == "b"
    finally:
        for c in clients:
            await c.close()
