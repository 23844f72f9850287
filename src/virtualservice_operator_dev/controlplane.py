"""A real, local Kubernetes control plane: etcd + kube-apiserver, in the spirit of envtest.

`ControlPlane` starts both on free loopback ports in a temporary directory, with RBAC
authorization, a ServiceAccount issuer and signing key, and an admin kubeconfig; waits
for `/readyz` and the `default` namespace; installs Istio's VirtualService CRD, taken from
the pinned `istio.io/api` Go module (see `virtualservice_operator_dev.istio`).
There is no kubelet, controller-manager or garbage collector: Deployments are stored but
never run, and deleted namespaces stay Terminating (isolate tests by names instead).

Child processes get PR_SET_PDEATHSIG, so they die with the process that started them
even when it is SIGKILLed: a failed or interrupted test run leaves no orphans.

Command line (used by `make cluster` / `make cluster-down`):
    python -m virtualservice_operator_dev.controlplane up|down|status [--dir .cluster]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from virtualservice_operator_dev.istio import VIRTUAL_SERVICE_CRD, crds_file, write_crds
from virtualservice_operator_dev.pki import Pki, pki_files, write_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_CIDR = "10.0.0.0/16"
_PR_SET_PDEATHSIG = 1


def default_bin_dir() -> Path:
    return Path(os.environ.get("VSO_BIN_DIR", REPO_ROOT / ".cache" / "bin"))


def ensure_binaries() -> Path:
    """Build (or find cached) etcd, kube-apiserver, kubectl, helm and Istio's CRDs; return
    the binaries' directory."""
    bin_dir = default_bin_dir()
    built = all((bin_dir / b).exists() for b in ("etcd", "kube-apiserver", "kubectl", "helm"))
    if built and crds_file().exists():
        return bin_dir
    script = REPO_ROOT / "hack" / "build-controlplane.sh"
    subprocess.run(["bash", str(script)], check=True, stdout=subprocess.DEVNULL)
    return bin_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to kill us when the
    # parent goes, so no control-plane process outlives its owner. SIGKILL, not
    # SIGTERM: a kube-apiserver whose etcd just vanished can take long to shut down.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_until(
    check: Any,
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(0.1)


class ControlPlane:
    """etcd + kube-apiserver on loopback. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        work_dir: Path | None = None,
        istio_crds: tuple[str, ...] = (VIRTUAL_SERVICE_CRD,),
        crd_dir: Path | None = None,
        extra_apiserver_args: tuple[str, ...] = (),
        extra_etcd_args: tuple[str, ...] = (),
        address: str = "127.0.0.1",
        pki_ips: tuple[str, ...] = (),
    ) -> None:
        """`istio_crds`: names of Istio's CRDs to install (from its Go module); `crd_dir`:
        a folder of further CRD manifests to install."""
        self.bin_dir = bin_dir or default_bin_dir()
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="vso-controlplane-"))
        self.istio_crds = istio_crds
        self.crd_dir = crd_dir
        self.extra_apiserver_args = extra_apiserver_args
        self.extra_etcd_args = extra_etcd_args
        self.address = address
        self.pki_ips = pki_ips
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None
        self.etcd_port = 0
        self.apiserver_port = 0
        self.start_seconds = 0.0
        self._pki: Pki | None = None
        self._ssl: ssl.SSLContext | None = None

    @classmethod
    def attach(cls, work_dir: Path, url: str, bin_dir: Path | None = None) -> Self:
        """A handle on one that another process runs (`make cluster`, `make node`), from
        its data directory and URL: to talk to it, not to stop it."""
        cp = cls(bin_dir=bin_dir, work_dir=work_dir)
        parsed = urllib.parse.urlsplit(url)
        assert parsed.hostname is not None and parsed.port is not None, url
        cp.address, cp.apiserver_port = parsed.hostname, parsed.port
        cp._pki = pki_files(work_dir / "pki")
        return cp

    # -- life cycle -------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.work_dir / "admin.kubeconfig"

    @property
    def pki(self) -> Pki:
        assert self._pki is not None, "start() first"
        return self._pki

    def pids(self) -> list[int]:
        return [p.pid for p in (self.etcd, self.apiserver) if p is not None]

    def start(self, timeout: float = 90.0) -> None:
        began = time.monotonic()
        try:
            self._pki = write_pki(self.work_dir / "pki", self.pki_ips)
            self._ssl = None
            self._before_apiserver()
            self._start_etcd(timeout)
            self.apiserver_port = free_port()
            self._write_admin_kubeconfig()
            self.start_apiserver(timeout)
            if self.istio_crds:
                self.install_crds(write_crds(self.work_dir / "istio-crds", self.istio_crds))
            if self.crd_dir is not None and self.crd_dir.is_dir():
                self.install_crds(self.crd_dir)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop everything started here (API server first), then remove a temp work dir."""
        self.stop_apiserver()
        self._terminate(self.etcd)
        self.etcd = None
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _before_apiserver(self) -> None:
        """Hook for subclasses: runs once the PKI exists, before etcd and the API server."""

    def _mode_args(self) -> list[str]:
        # No kubelet, so no Pod ever needs a ServiceAccount token mounted.
        return ["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount"]

    def stop_apiserver(self, kill: bool = False) -> None:
        self._terminate(self.apiserver, kill=kill)
        self.apiserver = None

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes] | None, kill: bool = False) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def _spawn(
        self, args: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.work_dir / log_name, "ab")  # noqa: SIM115 - owned by the child
        try:
            return subprocess.Popen(
                args,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads fork here
            )
        finally:
            log.close()

    def _start_etcd(self, timeout: float) -> None:
        self.etcd_port, peer = free_port(), free_port()
        peer_url = f"http://127.0.0.1:{peer}"
        self.etcd = self._spawn(
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                *self.extra_etcd_args,
            ],
            "etcd.log",
        )
        _wait_until(
            lambda: self._http_ok(f"{self.etcd_url}/health"),
            timeout,
            "etcd",
            self.etcd,
            self.work_dir / "etcd.log",
        )

    def start_apiserver(self, timeout: float = 90.0) -> None:
        """Start (or restart, after stop_apiserver) kube-apiserver on the same port and data."""
        pki = self.pki
        self.apiserver = self._spawn(
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={self.work_dir / 'pki'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--secure-port={self.apiserver_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                # Room for the many Services a long test session or a benchmark creates.
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                *self._mode_args(),
                f"--service-account-issuer={self.url}/",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--enable-priority-and-fairness=false",
                "--v=0",
                *self.extra_apiserver_args,
            ],
            "kube-apiserver.log",
        )
        log = self.work_dir / "kube-apiserver.log"
        _wait_until(lambda: self._api_ok("/readyz"), timeout, "kube-apiserver", self.apiserver, log)
        _wait_until(
            lambda: self._api_ok("/api/v1/namespaces/default"),
            timeout,
            "namespace default",
            self.apiserver,
            log,
        )

    # -- talking to it ----------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        # Built once: the PKI is written once per control plane, and tests poll with it.
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
            ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
            self._ssl = ctx
        return self._ssl

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _api_ok(self, path: str) -> bool:
        try:
            self.api_get(path)
        except (OSError, urllib.error.URLError):
            return False
        return True

    def api_get(self, path: str) -> str:
        """GET a path on the API server as admin (e.g. "/metrics") and return the body."""
        return self.api_get_bytes(path).decode()

    def api_get_bytes(self, path: str, timeout: float = 10.0) -> bytes:
        """GET a path as admin, the body as bytes (e.g. a /debug/pprof profile)."""
        req = urllib.request.Request(self.url + path)
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as r:
            return bytes(r.read())

    def api(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        """A JSON request as admin; returns (status, decoded body) and never raises on 4xx/5xx."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ssl_context()) as r:
                raw = r.read()
                return int(r.status), json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return int(e.code), json.loads(raw)
            except ValueError:
                return int(e.code), raw.decode(errors="replace")

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
            *args,
        ]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def install_crds(self, crd_dir: Path, timeout: float = 60.0) -> None:
        names = self.kubectl(
            "apply", "--server-side", "-f", str(crd_dir), "-o", "name"
        ).stdout.split()

        def established(name: str) -> bool:
            status, crd = self.api(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
            conditions = (crd.get("status") or {}).get("conditions") or [] if status == 200 else []
            return any(
                c.get("type") == "Established" and c.get("status") == "True" for c in conditions
            )

        # Polled, not `kubectl wait`: that fails outright while status has no conditions yet.
        for name in names:
            crd_name = name.split("/", 1)[-1]
            _wait_until(
                lambda crd_name=crd_name: established(crd_name),
                timeout,
                f"CRD {crd_name} established",
            )

    def _kubeconfig(self, user: dict[str, str], name: str) -> dict[str, Any]:
        ca = base64.b64encode(self.pki.ca_cert.read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": self.url, "certificate-authority-data": ca}}
            ],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
            "current-context": name,
        }

    def _write_admin_kubeconfig(self) -> None:
        pki = self.pki
        user = {
            "client-certificate-data": base64.b64encode(pki.admin_cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(pki.admin_key.read_bytes()).decode(),
        }
        self.admin_kubeconfig.write_text(yaml.safe_dump(self._kubeconfig(user, "admin")))
        self.admin_kubeconfig.chmod(0o600)

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | None = None, duration: str = "2h"
    ) -> Path:
        """Mint a token for ServiceAccount namespace/name (TokenRequest) and write a kubeconfig."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        path = path or self.work_dir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(self._kubeconfig({"token": token}, f"{namespace}-{name}")))
        path.chmod(0o600)
        return path


# -- `make cluster`: a long-running control plane in the background ---------------------


def _state_file(directory: Path) -> Path:
    return directory / "state.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _running(directory: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_file(directory).read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(int(state["pid"])) else None


def _serve(
    directory: Path,
    make: Callable[[Path], ControlPlane] | None = None,
    what: str = "control plane",
) -> int:
    """Run a control plane in the foreground until SIGTERM/SIGINT; publish its kubeconfig.

    `make` builds it from its data directory (default: a bare ControlPlane).
    """
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    data = directory / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    cp = make(data) if make else ControlPlane(bin_dir=ensure_binaries(), work_dir=data)
    cp.start()
    shutil.copy(cp.admin_kubeconfig, directory / "kubeconfig")
    (directory / "kubeconfig").chmod(0o600)
    _state_file(directory).write_text(
        json.dumps(
            {"pid": os.getpid(), "url": cp.url, "start_seconds": cp.start_seconds, "what": what}
        )
    )
    print(f"{what} ready at {cp.url} in {cp.start_seconds:.1f}s", flush=True)
    try:
        while not stop:
            time.sleep(0.2)
    finally:
        cp.stop()
        _state_file(directory).unlink(missing_ok=True)
    return 0


def _up(
    directory: Path,
    timeout: float,
    module: str = "virtualservice_operator_dev.controlplane",
    what: str = "control plane",
) -> int:
    """Start `python -m module serve` in the background and wait for its state file."""
    directory.mkdir(parents=True, exist_ok=True)
    if (state := _running(directory)) is not None:
        running = state.get("what", "control plane")
        print(
            f"{running} already running at {state['url']} (kubeconfig: {directory / 'kubeconfig'})"
        )
        if running != what:
            print(f"stop it first (make cluster-down) to start a {what}", file=sys.stderr)
            return 1
        return 0
    ensure_binaries()
    _state_file(directory).unlink(missing_ok=True)
    log_name = f"{what.replace(' ', '')}.log"
    log = open(directory / log_name, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "serve", "--dir", str(directory)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    _wait_until(
        lambda: _running(directory) is not None,
        timeout,
        what,
        proc,
        directory / log_name,
    )
    state = _running(directory)
    assert state is not None
    print(f"{what} running at {state['url']} (started in {state['start_seconds']:.1f}s)")
    print(f"export KUBECONFIG={(directory / 'kubeconfig').resolve()}")
    return 0


def _down(directory: Path, timeout: float = 30) -> int:
    state = _running(directory)
    if state is None:
        print("no control plane running")
        return 0
    what = state.get("what", "control plane")
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    _wait_until(lambda: not _alive(pid), timeout, f"{what} shutdown")
    print(f"{what} stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtualservice_operator_dev.controlplane")
    parser.add_argument("command", choices=["up", "down", "status", "serve", "build"])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.command == "build":
        print(ensure_binaries())
        return 0
    if args.command == "up":
        return _up(directory, args.timeout)
    if args.command == "down":
        return _down(directory)
    if args.command == "serve":
        return _serve(directory)
    state = _running(directory)
    print(f"running at {state['url']}" if state else "not running")
    return 0 if state else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
