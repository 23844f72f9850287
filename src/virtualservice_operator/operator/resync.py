"""Full resyncs and the orphan sweep: the leader's work outside the reconcile of one name.

Both are leader-only parts of the manager, each one task:
- `Resync` queues every known name once when the leader starts (a restart is a full
  resync), again every `period` (jittered by up to 10%), and when `request()`ed (after
  a config reload); each pass asks the sweep for one more run.
- `OrphanSweep` removes our placeholders from namespaces the config no longer lists
  (those in watched namespaces are in the cache and handled by name). It lists them
  from the API server, and `plan_orphan_sweep` decides, so its deletes pass the same
  gate as every other write, and the executor sends them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable

import structlog

from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import own_placeholders_selector
from virtualservice_operator.domain.model import ServiceInfo
from virtualservice_operator.domain.plan import plan_orphan_sweep
from virtualservice_operator.kube.client import SERVICES, ApiError, KubeClient
from virtualservice_operator.operator.executor import Executor
from virtualservice_operator.runtime.defaults import SYNC_PERIOD
from virtualservice_operator.runtime.leader import NotLeading
from virtualservice_operator.runtime.tasks import cancel_and_wait

log = structlog.get_logger("manager")


class OrphanSweep:
    needs_leader = True

    def __init__(
        self, client: KubeClient, executor: Executor, config: Callable[[], OperatorConfig]
    ) -> None:
        self._client = client
        self._executor = executor
        self._config = config
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        """Sweep once more (runs once started; requests meanwhile collapse into one)."""
        self._wanted.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="orphan sweep")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.sweep()

    async def sweep(self) -> None:
        config = self._config()
        # Ask only for the namespaces the cache does not hold.
        elsewhere = ",".join(f"metadata.namespace!={ns}" for ns in config.watched_namespaces)
        found: list[ServiceInfo] = []
        try:
            async for items, _ in self._client.list_pages(
                SERVICES,
                None,
                label_selector=own_placeholders_selector(config.instance),
                field_selector=elsewhere,
            ):
                found.extend(ServiceInfo.from_dict(obj) for obj in items)
        except ApiError as e:
            log.error("could not list placeholder Services for the orphan sweep", error=str(e))
            return
        deleted = 0
        for action in plan_orphan_sweep(config, found):
            fields = {"service": action.name, "namespace": action.namespace}
            try:
                await self._executor.execute(action)
            except NotLeading:
                return  # the Lease is lost: the process is ending
            except ApiError as e:
                log.warning("orphaned placeholder not deleted", **fields, error=str(e))
                continue
            deleted += 1
            if not self._executor.dry_run:  # a dry run's executor said what it would do
                log.info("orphaned placeholder deleted", **fields)
        # Said once per resync (start-up, then every -sync-period): the end of the work a
        # resync does outside the queue.
        log.info("orphan sweep done", deleted=deleted, found=len(found))


class Resync:
    needs_leader = True

    def __init__(
        self,
        names: Callable[[], Iterable[str]],
        enqueue_all: Callable[[Iterable[str]], None],
        sweep: OrphanSweep,
        *,
        period: float = SYNC_PERIOD,
    ) -> None:
        self._names = names
        self._enqueue_all = enqueue_all
        self._sweep = sweep
        self._period = period
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        """Resync once more now (after a config reload); a no-op until started."""
        self._wanted.set()

    async def start(self) -> None:
        self._resync()
        self._task = asyncio.create_task(self._loop(), name="periodic resync")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def _resync(self) -> None:
        self._wanted.clear()
        self._enqueue_all(self._names())
        self._sweep.request()

    async def _loop(self) -> None:
        while True:
            period = self._period * (1 + 0.1 * random.random())
            try:
                async with asyncio.timeout(period):
                    await self._wanted.wait()
            except TimeoutError:
                log.info("periodic resync")
            self._resync()
