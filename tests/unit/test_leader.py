"""Lease leader election against an in-memory API (get/create/replace with resourceVersion
checks), with a FakeClock: tests step time and wait on conditions with real deadlines.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable
from typing import Any, cast

import pytest

from tests.waiting import until
from virtualservice_operator.kube.client import (
    LEASES,
    AlreadyExists,
    Conflict,
    Kind,
    KubeClient,
    NotFound,
    ServerError,
)
from virtualservice_operator.runtime.clock import FakeClock
from virtualservice_operator.runtime.leader import LeaderElectionConfig, LeaderElector
from virtualservice_operator.runtime.metrics import OperatorMetrics

JSON = dict[str, Any]
NS, NAME = "ops", "lease"
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class FakeApi:
    """The three calls the elector may make (its RBAC allows no others), with 409s."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], JSON] = {}
        self.version = 0
        self.fail = False  # every call answers 500
        self.hang: asyncio.Event | None = None  # every call waits for this event
        # Writes are applied, then their answer waits for this event (a reply lost in flight).
        self.answer: asyncio.Event | None = None
        self.calls: list[str] = []

    async def _enter(self, verb: str, kind: Kind) -> None:
        assert kind == LEASES
        self.calls.append(verb)
        if self.hang is not None:
            await self.hang.wait()
        if self.fail:
            raise ServerError(500, "InternalError", "injected")

    def _store(self, key: tuple[str, str], body: JSON) -> JSON:
        self.version += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.version)
        self.objects[key] = body
        return copy.deepcopy(body)

    async def _answer(self, stored: JSON) -> JSON:
        if self.answer is not None:
            await self.answer.wait()
        return stored

    async def get(self, kind: Kind, namespace: str, name: str) -> JSON:
        await self._enter("get", kind)
        if (namespace, name) not in self.objects:
            raise NotFound(404, "NotFound", name)
        return copy.deepcopy(self.objects[(namespace, name)])

    async def create(self, kind: Kind, namespace: str, body: JSON) -> JSON:
        await self._enter("create", kind)
        key = (namespace, body["metadata"]["name"])
        if key in self.objects:
            raise AlreadyExists(409, "AlreadyExists", key[1])
        return await self._answer(self._store(key, body))

    async def replace(self, kind: Kind, namespace: str, name: str, body: JSON) -> JSON:
        await self._enter("replace", kind)
        current = self.objects.get((namespace, name))
        if current is None:
            raise NotFound(404, "NotFound", name)
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        return await self._answer(self._store((namespace, name), body))

    def spec(self) -> JSON:
        return cast(JSON, self.objects[(NS, NAME)]["spec"])

    def overwrite(self, **spec: Any) -> None:
        """Another client (kubectl) edits the Lease."""
        self._store((NS, NAME), {**self.objects[(NS, NAME)], "spec": {**self.spec(), **spec}})


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def config(identity: str, **kw: Any) -> LeaderElectionConfig:
    return LeaderElectionConfig(namespace=NS, name=NAME, identity=identity, **kw)


def gauge(metrics: OperatorMetrics) -> float | None:
    return metrics.registry.get_sample_value("leader_election_master_status", {"name": NAME})


def elector(api: FakeApi, clock: FakeClock, identity: str, **kw: Any) -> LeaderElector:
    return LeaderElector(cast(KubeClient, api), config(identity), clock=clock, **kw)


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


async def advance(clock: FakeClock, seconds: float, step: float = 0.25) -> None:
    """Move time in small steps, letting woken tasks run after each."""
    end = clock.now() + seconds
    while clock.now() < end:
        clock.advance(min(step, end - clock.now()))
        await settle()


async def advance_until(clock: FakeClock, condition: Callable[[], bool], limit: float) -> float:
    """Step time until `condition`; return the fake seconds that took."""
    await settle()  # whatever is due now starts its sleep before time moves
    start = clock.now()
    while not condition():
        assert clock.now() - start <= limit, f"not within {limit}s of fake time"
        await advance(clock, 0.25)
    return clock.now() - start


# -- configuration --------------------------------------------------------------------


def test_defaults_are_controller_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "manager-7d9f")
    c = LeaderElectionConfig(namespace=NS, name=NAME)
    assert (c.lease_duration, c.renew_deadline, c.retry_period) == (15.0, 10.0, 2.0)
    assert re.fullmatch(r"manager-7d9f_[0-9a-f]{8}", c.identity)
    assert LeaderElectionConfig(namespace=NS, name=NAME).identity != c.identity


@pytest.mark.parametrize(
    ("timings", "setting"),
    [
        ((10.0, 10.0, 2.0), "lease_duration"),
        ((15.0, 2.4, 2.0), "renew_deadline"),
        ((15.0, 10.0, 0.0), "retry_period"),
        ((15.0, 10.0, -1.0), "retry_period"),
    ],
)
def test_invalid_timings_are_refused(timings: tuple[float, float, float], setting: str) -> None:
    lease, renew, retry = timings
    with pytest.raises(ValueError, match=setting):
        LeaderElectionConfig(
            NS, NAME, lease_duration=lease, renew_deadline=renew, retry_period=retry
        )


def test_short_timings_are_accepted() -> None:
    LeaderElectionConfig(NS, NAME, lease_duration=3, renew_deadline=2, retry_period=0.5)


# -- acquiring ---------------------------------------------------------------------------


async def test_acquire_creates_the_lease(api: FakeApi, clock: FakeClock) -> None:
    metrics = OperatorMetrics()
    a = LeaderElector(
        cast(KubeClient, api),
        config("a", lease_duration=2.5, renew_deadline=2, retry_period=0.5),
        clock=clock,
        metrics=metrics,
    )
    assert gauge(metrics) == 0 and not a.leading.is_set()
    await asyncio.wait_for(a.acquire(), 1)
    spec = api.spec()
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0
    assert spec["leaseDurationSeconds"] == 3  # whole seconds, rounded up
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
    assert a.leading.is_set() and a.observed_leader == "a"
    assert gauge(metrics) == 1
    assert api.calls == ["get", "create"]


async def test_free_lease_is_taken_at_once(api: FakeApi, clock: FakeClock) -> None:
    await elector(api, clock, "a").acquire()
    api.overwrite(holderIdentity="")
    await asyncio.wait_for(elector(api, clock, "b").acquire(), 1)
    assert api.spec()["holderIdentity"] == "b" and api.spec()["leaseTransitions"] == 1


async def test_create_race_has_one_winner(api: FakeApi, clock: FakeClock) -> None:
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    tasks = [asyncio.create_task(e.acquire()) for e in (a, b)]
    done, pending = await asyncio.wait(tasks, timeout=1, return_when=asyncio.FIRST_COMPLETED)
    await settle()
    assert len(done) == 1 and [a.leading.is_set(), b.leading.is_set()].count(True) == 1
    loser = b if a.leading.is_set() else a
    assert loser.observed_leader == api.spec()["holderIdentity"] != loser.config.identity
    for t in pending:
        t.cancel()


async def test_expiry_is_judged_by_local_observation_not_renew_time(
    api: FakeApi, clock: FakeClock
) -> None:
    await elector(api, clock, "a").acquire()  # "a" then dies: never renews
    # A renewTime far in the past (or future) says nothing: clocks may be skewed.
    api.overwrite(renewTime="2000-01-01T00:00:00.000000Z")
    b = elector(api, clock, "b")
    task = asyncio.create_task(b.acquire())
    await until(lambda: b.observed_leader == "a")
    took = await advance_until(clock, b.leading.is_set, limit=15 + 2 * 2.2 + 1)
    assert took >= 15  # a full lease duration from b's first sight of the record
    await asyncio.wait_for(task, 1)
    assert api.spec()["holderIdentity"] == "b" and api.spec()["leaseTransitions"] == 1


async def test_record_change_restarts_the_expiry_wait(api: FakeApi, clock: FakeClock) -> None:
    await elector(api, clock, "a").acquire()
    b = elector(api, clock, "b")
    task = asyncio.create_task(b.acquire())
    await until(lambda: b.observed_leader == "a")
    await advance(clock, 12)
    api.overwrite(renewTime="2000-01-01T00:00:01.000000Z")  # "a" renewed (any change counts)
    changed = clock.now()
    await advance(clock, 12)
    assert not b.leading.is_set()  # 24 s since b first looked, but only 12 since the change
    # b notices the change on its next try (<= 4.4 s, jittered), waits 15 s from then,
    # and takes over on the try after that.
    await advance_until(clock, b.leading.is_set, limit=12)
    assert clock.now() - changed >= 15
    await asyncio.wait_for(task, 1)


async def test_live_leader_keeps_the_lease(api: FakeApi, clock: FakeClock) -> None:
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    await a.acquire()
    renewing = asyncio.create_task(a.renew_loop())
    trying = asyncio.create_task(b.acquire())
    await advance(clock, 60)
    assert (
        a.leading.is_set() and not b.leading.is_set() and not renewing.done() and not trying.done()
    )
    assert api.spec()["holderIdentity"] == "a" and api.spec()["leaseTransitions"] == 0
    trying.cancel()
    renewing.cancel()


# -- losing --------------------------------------------------------------------------------


async def test_renew_gives_up_at_the_renew_deadline(api: FakeApi, clock: FakeClock) -> None:
    metrics = OperatorMetrics()
    a = elector(api, clock, "a", metrics=metrics)
    await a.acquire()
    renewing = asyncio.create_task(a.renew_loop())
    await advance(clock, 6)  # a few good renewals
    last_good = clock.now() - clock.now() % 2  # renewals happen every retry_period
    api.fail = True
    await advance_until(clock, renewing.done, limit=11)
    # Gone before the renew deadline elapsed, well before others may take over (15 s).
    assert clock.now() - last_good <= 10
    assert not a.leading.is_set()
    assert gauge(metrics) == 0
    await asyncio.wait_for(renewing, 1)  # returned, did not raise


async def test_hanging_requests_do_not_outlive_the_deadline(api: FakeApi, clock: FakeClock) -> None:
    a = elector(api, clock, "a")
    await a.acquire()
    renewing = asyncio.create_task(a.renew_loop())
    api.hang = asyncio.Event()  # the API server stops answering
    took = await advance_until(clock, renewing.done, limit=11)
    assert took <= 10 and not a.leading.is_set()


async def test_stolen_lease_is_noticed_on_the_next_renewal(api: FakeApi, clock: FakeClock) -> None:
    a = elector(api, clock, "a")
    await a.acquire()
    renewing = asyncio.create_task(a.renew_loop())
    await advance(clock, 3)
    api.overwrite(holderIdentity="thief")
    took = await advance_until(clock, renewing.done, limit=2)
    assert took <= 2 and not a.leading.is_set() and a.observed_leader == "thief"


# -- releasing and running -------------------------------------------------------------


async def test_release_lets_a_successor_in_without_waiting(api: FakeApi, clock: FakeClock) -> None:
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    await a.acquire()
    trying = asyncio.create_task(b.acquire())
    await until(lambda: b.observed_leader == "a")
    await a.release()
    assert not a.leading.is_set()
    assert api.spec()["holderIdentity"] == "" and api.spec()["leaseDurationSeconds"] == 1
    # One jittered retry (<= 2.2 * retry_period, plus a time step), not a lease duration.
    took = await advance_until(clock, b.leading.is_set, limit=2 * 2.2 + 0.25)
    assert took <= 2 * 2.2 + 0.25
    await asyncio.wait_for(trying, 1)
    await a.release()  # not the holder: a no-op
    assert api.spec()["holderIdentity"] == "b" and api.spec()["leaseTransitions"] == 1


async def test_started_elector_leads_and_sets_lost_when_the_lease_is_taken(
    api: FakeApi, clock: FakeClock
) -> None:
    a = elector(api, clock, "a")
    await a.start()
    await asyncio.wait_for(a.leading.wait(), 1)
    assert a.leading.is_set() and not a.lost.is_set()
    api.overwrite(holderIdentity="thief")
    await advance_until(clock, a.lost.is_set, limit=2)
    assert not a.leading.is_set()
    await a.stop()
    assert api.spec()["holderIdentity"] == "thief"  # nothing released that was not ours


async def test_stop_releases_the_lease(api: FakeApi, clock: FakeClock) -> None:
    a = elector(api, clock, "a")
    await a.start()
    await asyncio.wait_for(a.leading.wait(), 1)
    await a.stop()
    assert not a.leading.is_set() and not a.lost.is_set()
    assert api.spec()["holderIdentity"] == ""


async def test_stop_before_leading_ends_the_campaign(api: FakeApi, clock: FakeClock) -> None:
    await elector(api, clock, "a").acquire()
    b = elector(api, clock, "b")
    await b.start()
    await until(lambda: b.observed_leader == "a")
    await asyncio.wait_for(b.stop(), 1)
    await advance(clock, 60)  # no campaign left to take the Lease once it expires
    assert not b.leading.is_set() and api.spec()["holderIdentity"] == "a"


@pytest.mark.parametrize("lease_exists", [False, True], ids=["create", "replace"])
async def test_stop_releases_a_lease_won_by_a_write_whose_answer_never_came(
    api: FakeApi, clock: FakeClock, lease_exists: bool
) -> None:
    """Stopped while its winning write is in flight (a SIGTERM then), the elector does not
    know it holds the Lease; it looks, and releases it, so no successor waits it out."""
    if lease_exists:
        await elector(api, clock, "old").acquire()
        api.overwrite(holderIdentity="")  # released by the old leader
    api.answer = asyncio.Event()
    a = elector(api, clock, "a")
    await a.start()
    await until(lambda: (api.objects.get((NS, NAME)) or {}).get("spec", {}).get(
        "holderIdentity") == "a")  # fmt: skip
    assert not a.leading.is_set()
    api.answer = None
    await asyncio.wait_for(a.stop(), 1)
    assert api.spec()["holderIdentity"] == "" and api.spec()["leaseDurationSeconds"] == 1


async def test_stop_after_a_lost_write_race_releases_nothing(
    api: FakeApi, clock: FakeClock
) -> None:
    """In doubt, the elector looks before releasing: another's Lease stays as it is."""
    api.answer = asyncio.Event()
    a = elector(api, clock, "a")
    await a.start()
    await until(lambda: (NS, NAME) in api.objects)
    api.answer = None
    api.overwrite(holderIdentity="b")  # b wrote after a's write landed
    await asyncio.wait_for(a.stop(), 1)
    assert api.spec()["holderIdentity"] == "b"
