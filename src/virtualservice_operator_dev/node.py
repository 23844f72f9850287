"""A real one-node Kubernetes on this machine: the control plane of controlplane.py plus
kube-controller-manager, kube-scheduler, kubelet, kube-proxy, containerd + runc + CNI.

Every Kubernetes part is built from the pinned `k8s.io/kubernetes` module by
hack/build-controlplane.sh; containerd, runc, the CNI plugins and iptables are Debian's
packages (hack/node/install-runtime.sh installs them when missing).

Traffic stays on this machine. The node creates the Pods' bridge POD_BRIDGE itself (this
kind of machine has no dummy interfaces) and its address NODE_IP, the Pods' gateway, is
the node's address: the API server and the kubelet listen there (the kubelet refuses a
loopback node address, and Pods cannot reach the host's 127.0.0.1). kube-proxy routes the
`kubernetes` Service's ClusterIP to NODE_IP; a FORWARD rule drops anything a Pod sends
off the bridge (no masquerade, no way out). containerd never pulls: there is no registry,
so every image is imported first (the pause image is built here from Kubernetes' pause.c).

One node per machine: containerd listens on a fixed socket (CONTAINERD_SOCKET, where
`make image` imports the operator's image) and iptables is shared, so a lock file under
STATE_DIR, held for the node's whole life, keeps a second one from starting.

`stop()` (and `cleanup()` after a crash) leave no process, mount, interface, cgroup or
iptables rule behind; `leftovers()` lists any, for `make cluster-down` and the tests.

Command line (used by `make node` / `make cluster-down`):
    python -m virtualservice_operator_dev.node up|down|status|check|leftovers [--dir .cluster]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from virtualservice_operator_dev import controlplane
from virtualservice_operator_dev.controlplane import (
    REPO_ROOT,
    SERVICE_CIDR,
    ControlPlane,
    _wait_until,
    ensure_binaries,
    free_port,
)
from virtualservice_operator_dev.gotools import module_version
from virtualservice_operator_dev.ociimage import ImageFile, write_image
from virtualservice_operator_dev.pki import issue

NODE_NAME = "vso-node"
POD_BRIDGE = "vso-cni0"
POD_CIDR = "10.214.0.0/24"
NODE_IP = "10.214.0.1"  # the bridge's own address: the Pods' gateway
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR
STATE_DIR = Path("/run/virtualservice-operator-node")
VAR_DIR = Path("/var/lib/virtualservice-operator-node")
CONTAINERD_SOCKET = STATE_DIR / "containerd.sock"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
CGROUP_ROOT = "kubelet"  # every Pod's cgroup lives under /kubelet in each hierarchy
FORWARD_CHAIN = "VSO-NODE-FORWARD"
CNI_BIN_DIR = Path("/usr/lib/cni")
INSTALL_RUNTIME = REPO_ROOT / "hack" / "node" / "install-runtime.sh"
METRICS_SERVER_MANIFEST = REPO_ROOT / "hack" / "node" / "metrics-server.yaml"
# The security context of the operator's own Pod (deployments/deployment.yaml), for the
# Pods the node's tests and the mesh run.
HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/bridge/bridge-nf-call-iptables")
_NODE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")
_RUNTIME_BINARIES = ("/usr/bin/containerd", "/usr/bin/runc", "/usr/bin/ctr")


class NodeUnavailable(RuntimeError):
    """This machine cannot run a node; the message says exactly why."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run a node, or None when it can."""
    if sys.platform != "linux":
        return f"a node needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a node needs root (containerd, mounts, network interfaces, iptables)"
    controllers = Path("/proc/cgroups")
    enabled = set()
    if controllers.exists():
        for line in controllers.read_text().splitlines()[1:]:
            name, *_, on = line.split()
            if on == "1":
                enabled.add(name)
    missing = {"cpu", "memory", "pids"} - enabled
    if missing:
        return f"a node needs the cgroup controllers {', '.join(sorted(missing))} (not enabled)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "a node needs overlayfs (modprobe overlay)"
    if shutil.which("apt-get") is None and not all(Path(b).exists() for b in _RUNTIME_BINARIES):
        return "a node needs containerd, runc and the CNI plugins (no apt-get to install them)"
    return None


def install_runtime() -> None:
    """Install containerd, runc, the CNI plugins, iptables and conntrack when missing."""
    subprocess.run(["bash", str(INSTALL_RUNTIME)], check=True)


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
    return result


# -- what a node leaves on the machine, and removing it ---------------------------------


def _our_mounts() -> list[str]:
    """Mount points under the node's directories, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith((f"{STATE_DIR}/", f"{VAR_DIR}/")):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _cgroup_hierarchies() -> list[Path]:
    """The cgroup v2 root, or each mounted cgroup v1 hierarchy."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]
    return [d for d in root.iterdir() if d.is_dir() and os.path.ismount(d)]


def _cgroup_dirs() -> list[Path]:
    return [h / CGROUP_ROOT for h in _cgroup_hierarchies() if (h / CGROUP_ROOT).is_dir()]


def _our_pids() -> list[int]:
    """Processes of the node: its binaries, containerd's shims, anything in a Pod cgroup."""
    ours: set[int] = set()
    names = {"containerd", "containerd-shim-runc-v2"}
    for cgroup in _cgroup_dirs():
        for procs in cgroup.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                ours.update(int(p) for p in procs.read_text().split())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not cmdline or not cmdline[0]:
            continue
        name = os.path.basename(cmdline[0].decode(errors="replace"))
        # Only a node runs these (one node per machine); containerd and its shims name
        # the node's state directory (their config, their socket).
        mine = any(str(STATE_DIR).encode() in a for a in cmdline)
        if name in _NODE_BINARIES or (name in names and mine):
            ours.add(int(proc.name))
    ours.discard(os.getpid())
    return sorted(ours)


_CHAIN_PREFIXES = ("KUBE-", "CNI-", FORWARD_CHAIN)  # the kubelet's, kube-proxy's, CNI's, ours
_TABLES = ("filter", "nat", "mangle")


def _iptables_chains() -> list[str]:
    """The node's chains, as `iptables/filter/KUBE-FIREWALL` (IPv4 and IPv6)."""
    chains = []
    for tool in ("iptables", "ip6tables"):
        for table in _TABLES:
            out = _run(f"{tool}-save", "-t", table, check=False).stdout
            chains += [
                f"{tool}/{table}/{line[1:].split()[0]}"
                for line in out.splitlines()
                if line.startswith(":") and line[1:].startswith(_CHAIN_PREFIXES)
            ]
    return chains


def _remove_chains() -> None:
    """Delete the node's chains and every rule that jumps to them, IPv4 and IPv6."""
    for tool in ("iptables", "ip6tables"):
        for table in _TABLES:
            rules = _run(tool, "-t", table, "-S", check=False).stdout.splitlines()
            ours = [
                r.split()[1]
                for r in rules
                if r.startswith("-N ") and r.split()[1].startswith(_CHAIN_PREFIXES)
            ]
            for rule in rules:
                words = shlex.split(rule)  # comments are quoted: "kubernetes service portals"
                if (
                    rule.startswith("-A ")
                    and words[1] not in ours
                    and any(w in ours for w in words)
                ):
                    _run(tool, "-t", table, "-D", *words[1:], check=False)
            for chain in ours:
                _run(tool, "-t", table, "-F", chain, check=False)
            for chain in ours:
                _run(tool, "-t", table, "-X", chain, check=False)


def _links() -> list[str]:
    out = _run("ip", "-o", "link", "show", check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [n for n in names if n == POD_BRIDGE]


def leftovers() -> dict[str, list[str]]:
    """Everything of a node still on this machine (empty lists when nothing is)."""
    found = {
        "processes": [str(p) for p in _our_pids()],
        "mounts": _our_mounts(),
        "interfaces": _links() if shutil.which("ip") else [],
        "cgroups": [str(d) for d in _cgroup_dirs()],
        "iptables": _iptables_chains() if shutil.which("iptables-save") else [],
    }
    return found


def node_running() -> bool:
    """Whether a node (from any checkout) holds the machine's node lock."""
    try:
        fd = os.open(STATE_DIR / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def cleanup() -> None:
    """Remove whatever a node (a running one's supervisor excepted) left on this machine."""
    for pid in _our_pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _our_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    for point in _our_mounts():
        _run("umount", "-l", point, check=False)
    # Cgroups: children before parents; a Pod's cgroup is empty once its processes died.
    for cgroup in _cgroup_dirs():
        for d in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            cgroup.rmdir()
    _remove_chains()
    for link in _links():
        _run("ip", "link", "delete", link, check=False)
    saved = STATE_DIR / "sysctl.json"
    if saved.exists():
        for key, value in json.loads(saved.read_text()).items():
            Path(key).write_text(value)
        saved.unlink()
    shutil.rmtree(STATE_DIR / "cni-ipam", ignore_errors=True)
    shutil.rmtree(STATE_DIR / "containerd", ignore_errors=True)
    shutil.rmtree(VAR_DIR / "kubelet", ignore_errors=True)
    shutil.rmtree(VAR_DIR / "pod-logs", ignore_errors=True)


# -- the node ---------------------------------------------------------------------------


class Node(ControlPlane):
    """A one-node cluster. Use as a context manager or call start()/stop(); root only."""

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        work_dir: Path | None = None,
        crd_dir: Path | None = None,
        cluster_dns: str | None = None,
    ) -> None:
        """`cluster_dns`: the ClusterIP of the cluster's DNS Service, written into every
        Pod's resolv.conf (the mesh runs one); None: Pods get the machine's resolv.conf."""
        super().__init__(
            bin_dir=bin_dir,
            work_dir=work_dir,
            istio_crds=(),  # installed as a user does: the README's install lines
            crd_dir=crd_dir,
            address=NODE_IP,
            pki_ips=(NODE_IP, KUBERNETES_SERVICE_IP),
        )
        self.cluster_dns = cluster_dns
        self.components: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}
        self._lock_fd: int | None = None
        self._front_proxy: tuple[Path, Path] | None = None
        self._kubelet_client: tuple[Path, Path] | None = None

    def pids(self) -> list[int]:
        return super().pids() + [p.pid for p in self.components.values()]

    # -- life cycle -------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise NodeUnavailable(reason)
        began = time.monotonic()
        self._take_lock()
        try:
            cleanup()
            self._network()
            super().start(timeout)
            self._start_containerd(timeout)
            self._start_components()
            self._wait_ready(timeout)
            self._deploy_metrics_server(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop every component, then remove every trace of the node from the machine."""
        for name in ("kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager"):
            self._terminate(self.components.pop(name, None))
        if self._lock_fd is None:
            super().stop()
            return
        self._remove_containers()
        self._terminate(self.components.pop("containerd", None))
        super().stop()
        cleanup()
        os.close(self._lock_fd)
        self._lock_fd = None

    def _take_lock(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 4096).decode(errors="replace").strip()
            os.close(fd)
            raise NodeUnavailable(
                f"a node is already running on this machine ({owner}); "
                "stop it there with `make cluster-down`"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, data {self.work_dir}\n".encode())
        self._lock_fd = fd

    # -- network ----------------------------------------------------------------------

    def _network(self) -> None:
        # The CNI bridge plugin finds the bridge and its gateway address already there.
        prefix = POD_CIDR.split("/")[1]
        _run("ip", "link", "add", POD_BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", POD_BRIDGE)
        _run("ip", "link", "set", POD_BRIDGE, "up")
        # A Pod reaching another Pod through a Service on the same bridge needs kube-proxy's
        # rules to see bridged traffic (kubeadm's preflight asks for the same).
        # The bridge plugin turns on IPv4 forwarding; cleanup() puts both back as they were.
        saved = STATE_DIR / "sysctl.json"
        if not saved.exists():
            saved.write_text(
                json.dumps({k: Path(k).read_text().strip() for k in _SYSCTLS if Path(k).exists()})
            )
        bridge_nf = Path(_SYSCTLS[1])
        if bridge_nf.exists():
            bridge_nf.write_text("1")
        # Nothing a Pod sends leaves through another interface (traffic stays here).
        _run("iptables", "-N", FORWARD_CHAIN)
        _run("iptables", "-A", FORWARD_CHAIN, "-i", POD_BRIDGE, "!", "-o", POD_BRIDGE, "-j", "DROP")
        _run("iptables", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)
        cni = STATE_DIR / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        conf = {
            "cniVersion": "1.0.0",
            "name": "vso-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(STATE_DIR / "cni-ipam"),
                    },
                }
            ],
        }
        (cni / "10-vso-node.conflist").write_text(json.dumps(conf, indent=2))

    # -- certificates and kubeconfigs -------------------------------------------------

    def _before_apiserver(self) -> None:
        self._kubelet_client = issue(
            self.pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"
        )
        self._front_proxy = issue(self.pki, "front-proxy-client", "front-proxy-client")

    def _mode_args(self) -> list[str]:
        assert self._kubelet_client is not None and self._front_proxy is not None
        pki = self.pki
        return [
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={self._kubelet_client[0]}",
            f"--kubelet-client-key={self._kubelet_client[1]}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer (metrics.k8s.io from metrics-server).
            f"--requestheader-client-ca-file={pki.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self._front_proxy[0]}",
            f"--proxy-client-key-file={self._front_proxy[1]}",
            "--enable-aggregator-routing=true",
        ]

    def _component_kubeconfig(self, name: str, user: str, group: str | None = None) -> Path:
        crt, key = issue(self.pki, name, user, group)
        path = self.work_dir / f"{name}.kubeconfig"
        config = self._kubeconfig(
            {
                "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
                "client-key-data": base64.b64encode(key.read_bytes()).decode(),
            },
            name,
        )
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- containerd -------------------------------------------------------------------

    def _start_containerd(self, timeout: float) -> None:
        began = time.monotonic()
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{VAR_DIR / "containerd"}"
state = "{STATE_DIR / "containerd"}"

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{VAR_DIR / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE on this kind of machine: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, not the machine's /run/netns.
  netns_mounts_under_state_dir = true
  tolerate_missing_hugepages_controller = true
  stream_server_address = "127.0.0.1"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{STATE_DIR / "cni"}"
"""
        path = STATE_DIR / "containerd.toml"
        path.write_text(config)
        # No registry is ever contacted: every pull goes to a closed loopback port and fails
        # at once, so an image that was not imported never sends a byte off this machine.
        closed = "http://127.0.0.1:9"
        no_pulls = {k: closed for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}
        env = {**os.environ, **no_pulls, "NO_PROXY": "", "no_proxy": ""}
        proc = self._spawn(["/usr/bin/containerd", "--config", str(path)], "containerd.log", env)
        self.components["containerd"] = proc
        _wait_until(
            lambda: self.ctr("version", check=False).returncode == 0,
            timeout,
            "containerd",
            proc,
            self.work_dir / "containerd.log",
        )
        self._import_pause()
        self.timings["containerd"] = time.monotonic() - began

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `ctr` against the node's containerd, in the CRI's `k8s.io` namespace."""
        return _run("ctr", "--address", str(CONTAINERD_SOCKET), "-n", "k8s.io", *args, check=check)

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive))

    def _import_pause(self) -> None:
        if PAUSE_IMAGE in self.ctr("images", "ls", "-q").stdout.split():
            return
        pause = build_pause(self.work_dir)
        archive = self.work_dir / "pause.tar"
        write_image(archive, PAUSE_IMAGE, [ImageFile(pause, "pause")], ["/pause"], "65535:65535")
        self.import_image(archive)

    def _remove_containers(self) -> None:
        """Kill every container of the node's Pods (the kubelet is already stopped)."""
        if "containerd" not in self.components:
            return
        # One call each, for every container at once (`-f` kills what still runs).
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        if tasks:
            self.ctr("tasks", "delete", "-f", *tasks, check=False)
        containers = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        if containers:
            self.ctr("containers", "delete", *containers, check=False)

    # -- the Kubernetes node components ------------------------------------------------

    def _start_control_component(self, name: str, *flags: str) -> None:
        """kube-controller-manager or kube-scheduler: its own identity, serving only on
        loopback, no leader election (one of each)."""
        kubeconfig = self._component_kubeconfig(name, f"system:{name}")
        self.components[name] = self._spawn(
            [
                str(self.bin_dir / name),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
                *flags,
            ],
            f"{name}.log",
        )

    def _start_components(self) -> None:
        pki = self.pki
        self._start_control_component(
            "kube-controller-manager",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        )
        self._start_control_component("kube-scheduler")
        self._start_kubelet()
        self._start_kube_proxy()

    def _start_kubelet(self) -> None:
        pki = self.pki
        kubeconfig = self._component_kubeconfig(
            "kubelet", f"system:node:{NODE_NAME}", "system:nodes"
        )
        serving = issue(
            self.pki, "kubelet-serving", f"system:node:{NODE_NAME}", server_ips=(NODE_IP,)
        )
        for hierarchy in _cgroup_hierarchies():
            (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(serving[0]),
            "tlsPrivateKeyFile": str(serving[1]),
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
            # This machine has cgroup v1 and no systemd (notes/node.md).
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "failSwapOn": False,
            # The disk is the machine's: never evict or collect images because of it (kind
            # does the same); nothing can be pulled again here.
            "imageGCHighThresholdPercent": 100,
            "evictionHard": {
                "nodefs.available": "0%",
                "nodefs.inodesFree": "0%",
                "imagefs.available": "0%",
            },
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            "podLogsDir": str(VAR_DIR / "pod-logs"),
        }
        if self.cluster_dns:
            config["clusterDNS"] = [self.cluster_dns]
        path = self.work_dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        self.components["kubelet"] = self._spawn(
            [
                str(self.bin_dir / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={VAR_DIR / 'kubelet'}",
                "--v=1",
            ],
            "kubelet.log",
        )

    def _start_kube_proxy(self) -> None:
        kubeconfig = self._component_kubeconfig("kube-proxy", "system:kube-proxy")
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # NodePorts only on the node's own address, never on the machine's network.
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # Leave the machine's conntrack table size alone (kind does the same).
            "conntrack": {"maxPerCore": 0},
        }
        path = self.work_dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self.components["kube-proxy"] = self._spawn(
            [str(self.bin_dir / "kube-proxy"), f"--config={path}", "--v=1"], "kube-proxy.log"
        )

    def _wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            for name, proc in self.components.items():
                if proc.poll() is not None:
                    log = (self.work_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}\n{log}")
            status, node = self.api("GET", f"/api/v1/nodes/{NODE_NAME}")
            if status != 200:
                return False
            conditions = node.get("status", {}).get("conditions", [])
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return False
            # Pods need their namespace's ServiceAccount (the controller-manager makes it).
            status, _ = self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200

        _wait_until(ready, timeout, f"node {NODE_NAME} Ready")

    def _deploy_metrics_server(self, timeout: float) -> None:
        """metrics-server as a Pod (`kubectl top`), when its binary was built.

        Waited for: while an APIService is unavailable, the namespace controller cannot
        list everything in a namespace, and a deleted namespace stays Terminating."""
        binary = self.bin_dir / "metrics-server"
        if not binary.exists():
            return
        version = module_version("sigs.k8s.io/metrics-server")
        image = f"registry.k8s.io/metrics-server/metrics-server:{version}"
        archive = self.work_dir / "metrics-server.tar"
        write_image(archive, image, [ImageFile(binary, "metrics-server")], ["/metrics-server"])
        self.import_image(archive)
        manifest = METRICS_SERVER_MANIFEST.read_text()
        self.kubectl("apply", "-f", "-", input=manifest.replace("METRICS_SERVER_IMAGE", image))

        def available() -> bool:
            status, svc = self.api(
                "GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io"
            )
            conditions = svc.get("status", {}).get("conditions", []) if status == 200 else []
            return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

        _wait_until(available, timeout, "metrics-server (APIService v1beta1.metrics.k8s.io)")


def build_pause(directory: Path) -> Path:
    """Kubernetes' own pause.c (from the pinned module), linked statically."""
    source = _module_dir() / "build" / "pause" / "linux" / "pause.c"
    out = directory / "pause"
    version = PAUSE_IMAGE.rsplit(":", 1)[1]
    _run("gcc", "-Os", "-static", f"-DVERSION={version}", "-o", str(out), str(source))
    return out


def _module_dir() -> Path:
    result = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"],
        cwd=REPO_ROOT / "hack" / "controlplane" / "kube",
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    return Path(result.stdout.strip())


# -- `make node` / `make cluster-down` --------------------------------------------------


def _make(data: Path) -> Node:
    return Node(bin_dir=ensure_binaries(), work_dir=data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtualservice_operator_dev.node")
    parser.add_argument("command", choices=["up", "down", "status", "serve", "check", "leftovers"])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.command == "check":
        reason = unavailable_reason()
        print(reason or "this machine can run a node")
        return 1 if reason else 0
    if args.command == "up":
        if (reason := unavailable_reason()) is not None:
            print(f"make node: {reason}", file=sys.stderr)
            return 1
        install_runtime()
        return controlplane._up(directory, args.timeout, "virtualservice_operator_dev.node", "node")
    if args.command == "serve":
        return controlplane._serve(directory, _make, "node")
    if args.command == "down":
        code = controlplane._down(directory, timeout=120)
        if unavailable_reason() is None and not node_running():
            cleanup()
            left = {k: v for k, v in leftovers().items() if v}
            if left:
                print(f"left behind: {json.dumps(left)}", file=sys.stderr)
                return 1
        return code
    if args.command == "leftovers":
        left = leftovers()
        print(json.dumps(left, indent=2))
        return 1 if any(left.values()) else 0
    state = controlplane._running(directory)
    print(
        f"{state.get('what', 'control plane')} running at {state['url']}"
        if state
        else "not running"
    )
    return 0 if state else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
