"""The Istio kind the operator writes, and which of its served versions it uses.

The client (`kube.client`) knows Kubernetes' own kinds; Istio's is the operator's choice.
"""

from __future__ import annotations

from virtualservice_operator.domain.constants import ISTIO_GROUP
from virtualservice_operator.kube.client import Kind

# v1beta1 is served by every Istio release that serves v1 too; it is what we watch.
VIRTUAL_SERVICES = Kind(ISTIO_GROUP, "v1beta1", "virtualservices", "VirtualService")


def virtual_service_kind(api_version: str) -> Kind:
    """The endpoint for a VirtualService body: the API server wants body and URL to agree."""
    version = api_version.rsplit("/", 1)[-1]
    return Kind(VIRTUAL_SERVICES.group, version, VIRTUAL_SERVICES.plural, VIRTUAL_SERVICES.kind)
