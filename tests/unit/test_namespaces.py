"""MissingNamespaces: each configured namespace that is missing said once (log and
Event), said again only when why changes, and a resync asked for when one appears."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from virtualservice_operator.domain.config import parse_config
from virtualservice_operator.operator.namespaces import MissingNamespaces
from virtualservice_operator.runtime.events import ObjectRef

CONFIG = parse_config("defaultNamespace: prod\ndeveloperNamespaces: [staging, qa]\n").config


class FakeCache:
    def __init__(self) -> None:
        self.absent: dict[str, str] = {}
        self.namespaces = type("Synced", (), {"synced": asyncio.Event()})()
        self.namespaces.synced.set()

    def absent_namespaces(self, config: Any) -> dict[str, str]:
        return {ns: why for ns, why in self.absent.items() if ns in config.watched_namespaces}


class FakeEvents:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, str]] = []

    def warning(self, ref: ObjectRef, reason: str, message: str) -> None:
        self.warnings.append((reason, message))


def test_said_once_per_namespace_and_resynced_when_it_appears() -> None:
    cache, events, resyncs = FakeCache(), FakeEvents(), []
    config = [CONFIG]
    missing = MissingNamespaces(
        cache,  # type: ignore[arg-type]
        lambda: config[0],
        events,  # type: ignore[arg-type]
        lambda: ObjectRef("ConfigMap", "ops", "config"),
        lambda: resyncs.append(1),
    )
    cache.absent = {"staging": "does not exist"}
    missing.check()  # a standby: the log line, no Event
    assert events.warnings == []
    asyncio.run(missing.start())  # the Lease won: the Event
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):  # every namespace event, config reload...: said once
            missing.check()
    assert logs == []  # said already
    assert events.warnings == [
        (
            "NamespaceMissing",
            "namespace staging does not exist (developerNamespaces in the config): nothing "
            "is written there until it exists; the operator acts as soon as it is created",
        )
    ]
    assert missing.reported == {"staging": "does not exist"} and resyncs == []

    cache.absent = {"staging": "is being deleted", "prod": "does not exist"}  # why changes
    missing.check()
    assert len(events.warnings) == 3
    assert "(defaultNamespace in the config)" in events.warnings[-1][1]

    cache.absent = {"prod": "does not exist"}  # staging created again: a resync
    with structlog.testing.capture_logs() as logs:
        missing.check()
    assert [x["event"] for x in logs] == ["namespace staging exists: resyncing"]
    assert resyncs == [1]

    # Dropped from the config while missing: nothing to say, nothing to resync.
    config[0] = parse_config("defaultNamespace: other\n").config
    cache.absent = {}
    missing.check()
    assert resyncs == [1] and missing.reported == {}
