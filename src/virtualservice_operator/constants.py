"""Names fixed by the operations guide and the behaviour contract (see README)."""

from typing import Final

OPERATOR_NAME: Final = "virtualservice-operator"
OPERATOR_NAMESPACE: Final = "virtualservice-operator-system"
CONFIG_MAP_NAME: Final = "virtualservice-operator-config"
CONFIG_KEY: Final = "config.yaml"
FIELD_MANAGER: Final = "virtualservice-operator"
LEASE_NAME: Final = "virtualservice-operator-leader"

# Label on every VirtualService the operator manages; without it, hands off.
MANAGED_BY_LABEL: Final = "managed-by"
MANAGED_BY_VALUE: Final = "virtualservice-operator"

# Label (not annotation: the guide selects on it with -l) on placeholder Services.
PLACEHOLDER_LABEL: Final = "virtualservice-operator/placeholder-service"
PLACEHOLDER_VALUE: Final = "true"
# Annotation on a placeholder: "<namespace>/<name>" of the Service it stands in for.
SOURCE_ANNOTATION: Final = "virtualservice-operator/source"
# Label on everything an instance creates: its identity (instance.py). Caches, the sweep and
# every write select on it, so instances sharing a cluster never touch each other's objects.
INSTANCE_LABEL: Final = "virtualservice-operator/instance"
# Label a team puts on a Service so that the operator leaves its name alone.
EXCLUDE_LABEL: Final = "virtualservice-operator/exclude"

VIRTUAL_SERVICE_SUFFIX: Final = "-virtual-service"
ISTIO_GROUP: Final = "networking.istio.io"
ISTIO_VERSIONS: Final = ("v1", "v1beta1", "v1alpha3")

DEFAULT_ROUTING_HEADER: Final = "x-developer"

SYSTEM_NAMESPACES: Final = frozenset(
    {"kube-system", "kube-public", "kube-node-lease", "istio-system", OPERATOR_NAMESPACE}
)
# The API server's own Service, present in "default": never acted on.
IGNORED_SERVICES: Final = frozenset({"kubernetes"})

# -max-concurrent-reconciles. controller-runtime defaults to 1; here workers are coroutines
# on one event loop, so a second one costs nothing but lets one name's round trips overlap
# another's. Measured (bench/README.md): at 5,000 Services x 10 namespaces under 50
# changes/s, p99 from event to write is 343 ms with 1 worker, 197 ms with 2.
DEFAULT_WORKERS = 2

# Defaults of `run`'s flags, each written once (controller-runtime's where it has one).
METRICS_BIND_ADDRESS: Final = ":8080"
HEALTH_PROBE_BIND_ADDRESS: Final = ":8081"
LEASE_DURATION: Final = 15.0  # seconds a Lease holds without renewal
RENEW_DEADLINE: Final = 10.0  # seconds the leader keeps trying to renew before giving up
RETRY_PERIOD: Final = 2.0  # seconds between two tries to acquire or renew
SYNC_PERIOD: Final = 10 * 3600.0  # full resync, jittered by up to 10%
WATCH_TIMEOUT: Final = 300  # seconds a watch asks the API server to stay open
WATCH_IDLE_TIMEOUT: Final = 120.0  # a watch silent this long is re-established
SHUTDOWN_GRACE: Final = 8.0  # seconds the parts get, together, to stop


# Label selectors of what an instance lists and watches: written here only.
def own_selector(instance: str) -> str:
    """This instance's objects (with or without `managed-by`: a VirtualService whose
    label a user removed is still seen, and left alone)."""
    return f"{INSTANCE_LABEL}={instance}"


def others_selector(instance: str) -> str:
    """Everything not this instance's: other instances', unlabelled and users' objects."""
    return f"{INSTANCE_LABEL}!={instance}"


def own_placeholders_selector(instance: str) -> str:
    return f"{PLACEHOLDER_LABEL}={PLACEHOLDER_VALUE},{INSTANCE_LABEL}={instance}"


def virtual_service_name(service: str) -> str:
    return f"{service}{VIRTUAL_SERVICE_SUFFIX}"


def service_for_virtual_service(name: str) -> str | None:
    """The Service name a VirtualService name belongs to, or None if not one of ours."""
    if name.endswith(VIRTUAL_SERVICE_SUFFIX) and len(name) > len(VIRTUAL_SERVICE_SUFFIX):
        return name[: -len(VIRTUAL_SERVICE_SUFFIX)]
    return None


def service_host(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.cluster.local"
