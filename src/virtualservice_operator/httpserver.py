"""The operator's HTTP endpoints, on the ports the operations guide names.

- health (default :8081): `/healthz` answers while the event loop turns; `/readyz`
  answers 200 once the config is loaded and the caches are synced (a standby that is
  not the leader is ready too: a rolling update must not stall on it).
- metrics (default :8080): `/metrics` (Prometheus text), and unless disabled
  `/debug/pprof/profile?seconds=N` (CPU) and `/debug/pprof/heap?seconds=N` (allocations
  traced for N seconds, default 30, and still live), in the pprof format that
  `go tool pprof` reads.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from virtualservice_operator import pprof
from virtualservice_operator.metrics import exposition


def parse_bind_address(address: str) -> tuple[str, int]:
    """ ":8080" → ("0.0.0.0", 8080); "127.0.0.1:0" → ("127.0.0.1", 0); "0" disables (port -1)."""
    if address in ("0", ""):
        return "", -1
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"bind address {address!r}: expected [host]:port, e.g. :8080")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class Servers:
    runners: list[web.AppRunner]
    ports: dict[str, int]

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


def _health_app(ready: Callable[[], tuple[bool, str]]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        ok, why = ready()
        return web.Response(text="ok" if ok else f"not ready: {why}", status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _metrics_app(registry: CollectorRegistry, profiling: bool) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=exposition(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    if profiling:
        app.router.add_get(
            "/debug/pprof/profile",
            _profile_handler(
                "profile", pprof.cpu_profile, lambda: pprof.DEFAULT_CPU_PROFILE_SECONDS
            ),
        )
        # Tracing allocations is costly: on only for the window asked for.
        app.router.add_get(
            "/debug/pprof/heap",
            _profile_handler(
                "heap",
                pprof.heap_profile_window,
                lambda: 0.0 if tracemalloc.is_tracing() else pprof.DEFAULT_HEAP_WINDOW_SECONDS,
            ),
        )
    return app


def _profile_handler(
    name: str,
    take: Callable[[float], Awaitable[bytes]],
    default_seconds: Callable[[], float],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET ?seconds=N: 400 for a bad N, 409 while another profile of the kind runs."""

    async def handler(request: web.Request) -> web.Response:
        try:
            seconds = float(request.query.get("seconds", default_seconds()))
            body = await take(seconds)
        except ValueError as e:
            return web.Response(status=400, text=f"{e}\n")
        except pprof.ProfileBusy as e:
            return web.Response(status=409, text=f"{e}\n")
        return _profile_response(body, name)

    return handler


def _profile_response(body: bytes, name: str) -> web.Response:
    return web.Response(
        body=body,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


async def start_servers(
    *,
    health_address: str,
    metrics_address: str,
    ready: Callable[[], tuple[bool, str]],
    registry: CollectorRegistry,
    profiling: bool = True,
) -> Servers:
    servers = Servers([], {})
    for label, address, app in (
        ("health", health_address, _health_app(ready)),
        ("metrics", metrics_address, _metrics_app(registry, profiling)),
    ):
        host, port = parse_bind_address(address)
        if port < 0:
            continue
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        servers.runners.append(runner)
        sockets = getattr(site._server, "sockets", None) or []
        servers.ports[label] = sockets[0].getsockname()[1] if sockets else port
    return servers
