"""An HTTP proxy in front of kube-apiserver that can misbehave on purpose.

It terminates TLS with the control plane's own serving certificate (so clients keep
verifying against the same CA), forwards each request to the real API server, and
streams responses back (watches included). Faults, switched on and off by tests:
- `fail(status, count, methods)`: answer the next `count` requests with `status`
  (429 with Retry-After, or 500) instead of forwarding them;
- `freeze()`: every watch open now stops delivering bytes but stays open (a silent
  watch, as a frozen NAT or proxy gives); other requests and new watches go through;
- `cut()`: close every open connection at once (API server "restarted" for clients).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from virtualservice_operator_dev.controlplane import ControlPlane, free_port

_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "content-encoding",
}


@dataclass
class _Fault:
    status: int
    remaining: int
    methods: frozenset[str]
    paths: tuple[str, ...]


@dataclass
class FaultProxy:
    cp: ControlPlane
    port: int = field(default_factory=free_port)
    injected: int = 0
    requests: int = 0

    def __post_init__(self) -> None:
        self._fault: _Fault | None = None
        self._generation = 0  # bumped by freeze(): streams of older generations go silent
        self._streams: dict[web.StreamResponse, asyncio.Task[object] | None] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- control (from the test's thread) --------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(10)

    def fail(
        self,
        status: int,
        count: int,
        methods: Iterable[str] = ("POST", "PUT", "PATCH", "DELETE", "GET"),
        paths: Iterable[str] = ("",),
    ) -> None:
        self._fault = _Fault(status, count, frozenset(methods), tuple(paths))

    def heal(self) -> None:
        self._fault = None

    def freeze(self) -> None:
        self._generation += 1

    def cut(self) -> None:
        async def _cut() -> None:
            for task in list(self._streams.values()):
                if task is not None:
                    task.cancel()

        asyncio.run_coroutine_threadsafe(_cut(), self._loop).result(10)

    def kubeconfig(self, source: str) -> str:
        """The text of kubeconfig `source` pointed at this proxy instead of the API server."""
        return source.replace(self.cp.url, self.url)

    # -- serving (on the proxy's own thread and loop) --------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(str(self.cp.pki.serving_cert), str(self.cp.pki.serving_key))
        client_ctx = ssl.create_default_context(cafile=str(self.cp.pki.ca_cert))
        self._session = ClientSession(
            connector=TCPConnector(ssl=client_ctx, limit=0),
            timeout=ClientTimeout(total=None),
            auto_decompress=False,
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=server_ctx).start()
        self._ready.set()
        await self._stop_event.wait()
        await runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        fault = self._fault
        if (
            fault is not None
            and fault.remaining > 0
            and request.method in fault.methods
            and any(request.path.startswith(p) for p in fault.paths)
            and "watch=" not in request.query_string
        ):
            fault.remaining -= 1
            self.injected += 1
            headers = {"Retry-After": "1"} if fault.status == 429 else {}
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": fault.status,
                "reason": "TooManyRequests" if fault.status == 429 else "InternalError",
                "message": "injected by the test's fault proxy",
            }
            return web.json_response(body, status=fault.status, headers=headers)
        generation = self._generation
        is_watch = "watch=" in request.query_string
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with self._session.request(
            request.method, self.cp.url + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP},
            )
            await response.prepare(request)
            self._streams[response] = asyncio.current_task()
            try:
                async for chunk in upstream.content.iter_any():
                    if is_watch and self._generation != generation:
                        # Frozen: hold the connection open, deliver nothing more.
                        await asyncio.Event().wait()
                    await response.write(chunk)
                await response.write_eof()
            finally:
                self._streams.pop(response, None)
            return response
