"""The operator's HTTP endpoints, on the ports the operations guide names.

- health (default :8081): `/healthz` answers while the event loop turns; `/readyz`
  answers 200 once the config is loaded and the caches are synced (a standby that is
  not the leader is ready too: a rolling update must not stall on it).
- metrics (default :8080): `/metrics` (Prometheus text), and with profiling on
  `/debug/pprof/profile?seconds=N` (CPU) and `/debug/pprof/heap?seconds=N` (allocations
  traced for N seconds, default 30, and still live), in the pprof format that
  `go tool pprof` reads.

Secure serving (`secure=True`) makes the metrics port HTTPS (see `servingcert`) and lets
a request to a served path through only when `authz.AccessReview` allows it; a path that
is not served answers 404 without asking the API server, as controller-runtime does.
The health port stays plain HTTP: the kubelet probes it without credentials.
"""

from __future__ import annotations

import ssl
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from virtualservice_operator.runtime.metrics import exposition
from virtualservice_operator.serving import pprof
from virtualservice_operator.serving.authz import AccessReview, ReviewClient
from virtualservice_operator.serving.cert import CertificateReloader, self_signed_context


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
    reloader: CertificateReloader | None = None

    async def stop(self) -> None:
        if self.reloader is not None:
            await self.reloader.stop()
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


def _access_middleware(review: AccessReview) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:  # 404/405: nothing to guard
            return await handler(request)
        decision = await review.check(
            request.headers.get("Authorization"), request.method, request.path
        )
        if not decision.allowed:
            return web.Response(status=decision.status, text=f"{decision.message}\n")
        return await handler(request)

    return check


def _metrics_app(
    registry: CollectorRegistry, profiling: bool, review: AccessReview | None
) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=exposition(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application(middlewares=[_access_middleware(review)] if review else [])
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
    profiling: bool = False,
    secure: bool = False,
    cert_path: str | None = None,
    review_client: ReviewClient | None = None,
) -> Servers:
    """Serve health and metrics. With `secure`, metrics over HTTPS (the key pair in
    `cert_path`, else a self-signed one) behind reviews sent through `review_client`.
    Raises `ValueError` for a key pair that does not load (`servingcert.CertificateError`)
    or a `cert_path` without `secure`."""
    servers = Servers([], {})
    tls: ssl.SSLContext | None = None
    review: AccessReview | None = None
    if cert_path and not secure:  # a certificate given but plain HTTP served: surely a slip
        raise ValueError(
            f"-metrics-cert-path={cert_path} is set but -metrics-secure is not: "
            "add -metrics-secure=true to serve /metrics over HTTPS with it"
        )
    if secure:
        if review_client is None:
            raise ValueError("secure serving needs a client for the access reviews")
        review = AccessReview(review_client)
        if cert_path:
            servers.reloader = CertificateReloader(cert_path)
            tls = servers.reloader.context
        else:
            tls = self_signed_context()
    for label, address, app, context in (
        ("health", health_address, _health_app(ready), None),
        ("metrics", metrics_address, _metrics_app(registry, profiling, review), tls),
    ):
        host, port = parse_bind_address(address)
        if port < 0:
            continue
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=context)
        await site.start()
        servers.runners.append(runner)
        sockets = getattr(site._server, "sockets", None) or []
        servers.ports[label] = sockets[0].getsockname()[1] if sockets else port
    if servers.reloader is not None:
        servers.reloader.start()
    return servers
