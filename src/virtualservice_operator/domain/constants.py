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
