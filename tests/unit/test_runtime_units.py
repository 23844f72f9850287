"""Run-time pieces that the integration tests cannot pin down deterministically:
the /readyz before-and-after, the command line in both flag forms, log rendering and
levels, and the controller's two ways of stopping (graceful and at once)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import structlog

from virtualservice_operator.cli import build_parser, parse_duration
from virtualservice_operator.domain.config import parse_config
from virtualservice_operator.kube.client import KubeClient
from virtualservice_operator.operator.app import Operator, Options
from virtualservice_operator.runtime import logs
from virtualservice_operator.runtime.controller import Controller
from virtualservice_operator.runtime.metrics import OperatorMetrics
from virtualservice_operator.runtime.reconcile import Result
from virtualservice_operator.runtime.workqueue import WorkQueue
from virtualservice_operator.serving.server import Servers, parse_bind_address, start_servers

# -- 3. probes: /readyz 503 until ready, then 200 ------------------------------------------


@pytest.fixture
async def probe_servers() -> AsyncIterator[tuple[Servers, dict[str, Any]]]:
    state: dict[str, Any] = {"ready": (False, "caches not synced")}
    servers = await start_servers(
        health_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
        ready=lambda: state["ready"],
        registry=OperatorMetrics().registry,
        profiling=False,
    )
    yield servers, state
    await servers.stop()


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as r,
    ):
        return r.status, await r.text()


async def test_readyz_is_503_with_the_reason_until_ready_then_200(
    probe_servers: tuple[Servers, dict[str, Any]],
) -> None:
    servers, state = probe_servers
    health = servers.ports["health"]
    assert await _get(health, "/healthz") == (200, "ok")  # alive even when not ready
    assert await _get(health, "/readyz") == (503, "not ready: caches not synced")
    state["ready"] = (False, "config not loaded")
    assert await _get(health, "/readyz") == (503, "not ready: config not loaded")
    state["ready"] = (True, "")
    assert await _get(health, "/readyz") == (200, "ok")
    assert (await _get(servers.ports["metrics"], "/debug/pprof/heap"))[0] == 404  # profiling off


async def test_operator_ready_needs_the_config_and_synced_caches() -> None:
    client = KubeClient.__new__(KubeClient)  # never used: nothing is started
    operator = Operator(Options(), client, OperatorMetrics())
    assert operator.ready() == (False, "config not loaded")
    operator.config.current = parse_config("defaultNamespace: prod\n").config
    assert operator.ready() == (False, "caches not synced")


def test_bind_addresses() -> None:
    assert parse_bind_address(":8080") == ("0.0.0.0", 8080)
    assert parse_bind_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_bind_address("[::1]:8081") == ("::1", 8081)
    assert parse_bind_address("0") == ("", -1)
    with pytest.raises(ValueError, match="expected"):
        parse_bind_address("8080")


# -- 5 and 8. the command line, in both flag forms -------------------------------------------

RUN_FLAGS: list[tuple[str, str, str, object]] = [
    # (flag, value given, dest, parsed)
    ("kubeconfig", "/tmp/kc", "kubeconfig", "/tmp/kc"),
    ("config-map-name", "cm", "config_map_name", "cm"),
    ("config-map-namespace", "ops", "config_map_namespace", "ops"),
    ("metrics-bind-address", "127.0.0.1:9090", "metrics_bind_address", "127.0.0.1:9090"),
    ("health-probe-bind-address", ":9091", "health_probe_bind_address", ":9091"),
    ("leader-elect", "true", "leader_elect", True),
    ("leader-election-namespace", "other", "leader_election_namespace", "other"),
    ("leader-election-id", "my-lease", "leader_election_id", "my-lease"),
    ("lease-duration", "4s", "lease_duration", 4.0),
    ("renew-deadline", "3s", "renew_deadline", 3.0),
    ("retry-period", "500ms", "retry_period", 0.5),
    ("enable-profiling", "true", "enable_profiling", True),
    ("metrics-secure", "true", "metrics_secure", True),
    ("metrics-cert-path", "/certs", "metrics_cert_path", "/certs"),
    ("zap-log-level", "error", "zap_log_level", "error"),
    ("zap-development", "true", "zap_development", True),
    ("max-concurrent-reconciles", "3", "max_concurrent_reconciles", 3),
    ("sync-period", "1m30s", "sync_period", 90.0),
]


@pytest.mark.parametrize("dashes", ["-", "--"])
@pytest.mark.parametrize(
    ("flag", "value", "dest", "parsed"), RUN_FLAGS, ids=[f[0] for f in RUN_FLAGS]
)
def test_run_flags_in_both_forms(
    dashes: str, flag: str, value: str, dest: str, parsed: object
) -> None:
    joined = build_parser().parse_args(["run", f"{dashes}{flag}={value}"])
    assert getattr(joined, dest) == parsed
    separate = build_parser().parse_args(["run", f"{dashes}{flag}", value])
    assert getattr(separate, dest) == parsed


def test_run_defaults_are_the_guides_and_controller_runtimes() -> None:
    args = build_parser().parse_args(["run"])
    assert args.metrics_bind_address == ":8080"
    assert args.health_probe_bind_address == ":8081"
    assert args.config_map_name == "virtualservice-operator-config"
    assert args.config_map_namespace == "virtualservice-operator-system"
    assert args.leader_elect is False
    assert args.leader_election_id == "virtualservice-operator-leader"
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (15.0, 10.0, 2.0)
    # Profiling and secure serving are opt-in; the guide's plain /metrics works as is.
    assert (args.enable_profiling, args.metrics_secure, args.metrics_cert_path) == (
        False,
        False,
        "",
    )
    assert (args.zap_log_level, args.zap_development) == ("info", False)
    assert args.kubeconfig is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-leader-elect"], True),
        (["--leader-elect"], True),
        (["-leader-elect=false"], False),
        (["--leader-elect=False"], False),
        (["-leader-elect=1"], True),
        (["-leader-elect", "-leader-elect=false"], False),  # the last one wins, as in Go
    ],
)
def test_boolean_flags(argv: list[str], expected: bool) -> None:
    assert build_parser().parse_args(["run", *argv]).leader_elect is expected


@pytest.mark.parametrize(
    "argv",
    [
        ["-zap-log-level=verbose"],
        ["-leader-elect=maybe"],
        ["-lease-duration=15x"],
        ["-retry-period=2 s"],
        ["-no-such-flag=1"],
    ],
)
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", *argv])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15.0),
        ("10h", 36000.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("2", 2.0),
        ("0.5", 0.5),
        ("1h2m3s", 3723.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "15x", "1m 30s", "-"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


# -- 5. log lines ------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_guide_fields() -> None:
    out = io.StringIO()
    logs.configure("info", False, stream=out)
    log = structlog.get_logger("reconciler")
    log.info(
        "VirtualService created",
        service="web",
        namespace="prod",
        virtualservice="web-virtual-service",
    )
    log.error("conflict: retry exhausted", service="web", error="409")
    log.debug("not shown at info")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["msg"] == "VirtualService created" and first["level"] == "info"
    assert first["timestamp"].endswith("Z") or "+00:00" in first["timestamp"]
    assert (first["service"], first["namespace"], first["virtualservice"]) == (
        "web",
        "prod",
        "web-virtual-service",
    )
    assert second["level"] == "error" and second["error"] == "409"
    assert "event" not in first


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["debug", "info", "warning", "error"]),
        ("info", ["info", "warning", "error"]),
        ("error", ["error"]),
    ],
)
def test_log_level_floor(level: str, shown: list[str]) -> None:
    out = io.StringIO()
    logs.configure(level, False, stream=out)
    log = structlog.get_logger("t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [json.loads(line)["level"] for line in out.getvalue().splitlines()] == shown


@pytest.mark.usefixtures("restore_logging")
def test_development_mode_is_console_text() -> None:
    out = io.StringIO()
    logs.configure("info", True, stream=out)
    structlog.get_logger("t").info("config reloaded", changes=["x"])
    text = out.getvalue()
    assert "config reloaded" in text and "changes=" in text
    with pytest.raises(ValueError):
        json.loads(text)
    assert "\x1b[" not in text  # no colours when the stream is not a terminal


# -- 9. stopping: graceful (finish in flight) and at once (cancel in flight) -----------------


class BlockingReconciler:
    """Blocks every reconcile until released; records what started and what finished."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.running = asyncio.Event()
        self.release = asyncio.Event()

    async def reconcile(self, key: str) -> Result:
        self.started.append(key)
        self.running.set()
        await self.release.wait()
        self.finished.append(key)
        return Result()


def _controller() -> tuple[Controller, BlockingReconciler, OperatorMetrics]:
    metrics = OperatorMetrics()
    reconciler = BlockingReconciler()
    queue: WorkQueue[str] = WorkQueue("t", metrics=metrics.queue_metrics("t"))
    return Controller(reconciler, queue, metrics, workers=1, name="t"), reconciler, metrics


def _reconciles(metrics: OperatorMetrics, result: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "controller_runtime_reconcile_total", {"controller": "t", "result": result}
        )
        or 0.0
    )


def _active_workers(metrics: OperatorMetrics) -> float | None:
    return metrics.registry.get_sample_value(
        "controller_runtime_active_workers", {"controller": "t"}
    )


async def test_graceful_stop_finishes_the_reconcile_in_flight_and_takes_no_more() -> None:
    controller, reconciler, metrics = _controller()
    controller.enqueue_all(["a", "b", "c"])
    await controller.start()
    await asyncio.wait_for(reconciler.running.wait(), 5)
    stopping = asyncio.create_task(controller.stop())
    # stop() does not return while "a" is in flight (a bounded look, not a synchronisation).
    done, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not done
    controller.enqueue("d")  # intake stopped: ignored
    reconciler.release.set()
    await asyncio.wait_for(stopping, 5)
    assert reconciler.started == ["a"]
    assert reconciler.finished == ["a"]
    assert _reconciles(metrics, "success") == 1
    assert _active_workers(metrics) == 0


async def test_a_stop_cut_short_cancels_the_reconcile_in_flight() -> None:
    # The manager cuts a stop short when its grace period is over, and at once when the
    # Lease is lost.
    controller, reconciler, metrics = _controller()
    controller.enqueue_all(["a", "b"])
    await controller.start()
    await asyncio.wait_for(reconciler.running.wait(), 5)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await controller.stop()
    reconciler.release.set()  # too late: "a" is cancelled before it can go on
    await asyncio.sleep(0)
    assert reconciler.started == ["a"]
    assert reconciler.finished == []
    assert _reconciles(metrics, "success") == 0
    assert _active_workers(metrics) == 0
