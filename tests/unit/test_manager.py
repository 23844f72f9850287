"""The manager of runnables: start order by group, stop in reverse within one grace
period, leader-only parts only once the Lease is won, exit 1 (at once) once it is lost."""

from __future__ import annotations

import asyncio

import pytest

from tests.waiting import until
from virtualservice_operator.runtime.manager import Manager


class Part:
    def __init__(self, name: str, log: list[str], *, needs_leader: bool = False) -> None:
        self.name = name
        self.log = log
        self.needs_leader = needs_leader
        self.stop_blocks = False

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.stop_blocks:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.log.append(f"cancelled {self.name}")
                raise


class CachePart(Part):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(name, log)
        self.synced = asyncio.Event()

    async def wait_synced(self) -> None:
        await self.synced.wait()
        self.log.append(f"synced {self.name}")


class ServerPart(Part):
    @property
    def ports(self) -> dict[str, int]:
        return {}


class FakeElection(Part):
    def __init__(self, log: list[str]) -> None:
        super().__init__("elector", log)
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()


async def test_groups_start_in_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    manager = Manager()
    cache = CachePart("cache", log)
    # Added in an order the manager must not follow: it sorts by what each part is.
    for part in (
        Part("controller", log, needs_leader=True),
        Part("events", log),
        cache,
        ServerPart("servers", log),
    ):
        manager.add(part)
    running = asyncio.create_task(manager.run())
    await until(lambda: "start cache" in log)
    await asyncio.sleep(0.01)  # a bounded look: nothing else starts before the sync
    assert log == ["start servers", "start cache"]
    cache.synced.set()
    await until(lambda: "start controller" in log)
    assert manager.leading
    manager.request_stop()
    assert await asyncio.wait_for(running, 2) == 0
    assert log == [
        "start servers",
        "start cache",
        "synced cache",
        "start events",
        "start controller",
        "stop controller",
        "stop events",
        "stop cache",
        "stop servers",
    ]


async def test_leader_only_parts_wait_for_the_lease_and_losing_it_exits_1() -> None:
    log: list[str] = []
    election = FakeElection(log)
    manager = Manager(elector=election, grace=5)
    controller = Part("controller", log, needs_leader=True)
    controller.stop_blocks = True  # a reconcile in flight: cancelled at once on loss
    manager.add(controller)
    manager.add(Part("events", log))
    running = asyncio.create_task(manager.run())
    await until(lambda: "start events" in log)
    await asyncio.sleep(0.01)
    assert "start controller" not in log and not manager.leading  # a standby
    election.leading.set()
    await until(lambda: "start controller" in log)
    election.lost.set()
    assert await asyncio.wait_for(running, 1) == 1  # well within the 5 s grace
    assert log[-4:] == ["stop controller", "cancelled controller", "stop events", "stop elector"]
    assert not manager.leading


async def test_a_standby_stops_without_ever_starting_leader_parts() -> None:
    log: list[str] = []
    manager = Manager(elector=FakeElection(log))
    manager.add(Part("controller", log, needs_leader=True))
    running = asyncio.create_task(manager.run())
    await until(lambda: "start elector" in log)
    manager.request_stop()
    assert await asyncio.wait_for(running, 1) == 0
    assert log == ["start elector", "stop elector"]


async def test_one_grace_period_for_all_parts() -> None:
    log: list[str] = []
    manager = Manager(grace=0.2)
    slow = [Part(f"slow{i}", log) for i in range(3)]
    for part in slow:
        part.stop_blocks = True
        manager.add(part)
    running = asyncio.create_task(manager.run())
    await until(lambda: "start slow2" in log)
    started = asyncio.get_running_loop().time()
    manager.request_stop()
    assert await asyncio.wait_for(running, 2) == 0
    assert asyncio.get_running_loop().time() - started < 1.0  # 0.2 s in all, not 3 x 0.2
    assert [x for x in log if x.startswith("cancelled")] == [
        "cancelled slow2",
        "cancelled slow1",
        "cancelled slow0",
    ]


async def test_a_part_that_cannot_start_stops_what_started_and_raises() -> None:
    log: list[str] = []

    class Broken(CachePart):
        async def start(self) -> None:
            raise RuntimeError("no config")

    manager = Manager()
    manager.add(ServerPart("servers", log))
    manager.add(Broken("config", log))
    manager.add(Part("events", log))
    with pytest.raises(RuntimeError, match="no config"):
        await asyncio.wait_for(manager.run(), 2)
    assert log == ["start servers", "stop config", "stop servers"]
