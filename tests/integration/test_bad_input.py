"""Bad input, refused with a clear error and nothing lost, against a running operator.

Every bad config below is written to the live ConfigMap of a converged operator: each must
be refused with an error naming the field, and no Service or VirtualService may change.
docs/reliability.md lists these cases (a test checks it)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import Api, wait_for
from virtualservice_operator_dev.controlplane import REPO_ROOT

pytestmark = pytest.mark.integration

GOOD_TEMPLATE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: "${serviceName}-virtual-service"
  namespace: "${defaultNamespace}"
spec:
  hosts: [${serviceName}]
  http:
  - route:
    - destination: {host: "${serviceName}.${defaultNamespace}.svc.cluster.local"}
"""

# (case id, config text with {D} / {N} placeholders, a word the error must contain)
BAD_CONFIGS = [
    ("yaml-syntax", "defaultNamespace: {D}\ndeveloperNamespaces: [{N}\n", "line"),
    ("not-a-mapping", "- just\n- a list\n", "mapping"),
    ("empty", "", "defaultNamespace"),
    ("missing-default", "developerNamespaces: [{N}]\n", "defaultNamespace"),
    ("wrong-type-list", "defaultNamespace: {D}\ndeveloperNamespaces: {N}\n", "developerNamespaces"),
    (
        "wrong-type-bool",
        "defaultNamespace: {D}\nenablePlaceholderServices: maybe\n",
        "enablePlaceholderServices",
    ),
    (
        "invalid-namespace",
        "defaultNamespace: {D}\ndeveloperNamespaces: [Dev_Team]\n",
        "developerNamespaces",
    ),
    ("empty-namespace", "defaultNamespace: ''\n", "defaultNamespace"),
    (
        "too-long-namespace",
        "defaultNamespace: {D}\ndeveloperNamespaces: [" + "a" * 64 + "]\n",
        "developerNamespaces",
    ),
    (
        "default-as-developer",
        "defaultNamespace: {D}\ndeveloperNamespaces: [{D}]\n",
        "developerNamespaces",
    ),
    (
        "duplicate-developer",
        "defaultNamespace: {D}\ndeveloperNamespaces: [{N}, {N}]\n",
        "developerNamespaces",
    ),
    ("system-namespace", "defaultNamespace: kube-system\n", "defaultNamespace"),
    ("bad-header", "defaultNamespace: {D}\nrouting: {{header: 'x dev'}}\n", "routing"),
    ("bad-match-mode", "defaultNamespace: {D}\nrouting: {{match: cookie}}\n", "routing"),
    (
        "template-not-yaml",
        'defaultNamespace: {D}\nvirtualServiceTemplate: "kind: [unclosed"\n',
        "virtualServiceTemplate",
    ),
    (
        "template-wrong-kind",
        "defaultNamespace: {D}\nvirtualServiceTemplate: |\n  apiVersion: v1\n  kind: Service\n  metadata: {{name: '${{serviceName}}-virtual-service'}}\n",
        "virtualServiceTemplate",
    ),
    (
        "template-wrong-name",
        "defaultNamespace: {D}\nvirtualServiceTemplate: |\n  apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {{name: '${{serviceName}}'}}\n  spec: {{hosts: [x]}}\n",
        "virtualServiceTemplate",
    ),
    (
        "template-wrong-namespace",
        "defaultNamespace: {D}\nvirtualServiceTemplate: |\n  apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {{name: '${{serviceName}}-virtual-service', namespace: elsewhere}}\n  spec: {{hosts: [x]}}\n",
        "virtualServiceTemplate",
    ),
    (
        "template-unknown-variable",
        "defaultNamespace: {D}\nvirtualServiceTemplate: |\n  apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {{name: '${{serviceName}}-virtual-service'}}\n  spec: {{hosts: ['${{team}}']}}\n",
        "team",
    ),
    (
        "template-injection",
        "defaultNamespace: {D}\nvirtualServiceTemplate: |\n  apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {{name: '${{serviceName}}-virtual-service'}}\n  spec: {{hosts: [x], http: \"${{serviceName}}\\n  evil: true\"}}\n",
        "virtualServiceTemplate",
    ),
    (
        "template-istio-schema-type",
        "defaultNamespace: {D}\nvirtualServiceTemplate: |\n  apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {{name: '${{serviceName}}-virtual-service'}}\n  spec: {{hosts: '${{serviceName}}'}}\n",
        "spec.hosts: expected a list",
    ),
    (
        "template-istio-schema-unknown-field",
        "defaultNamespace: {D}\nvirtualServiceTemplate: |\n  apiVersion: networking.istio.io/v1\n  kind: VirtualService\n  metadata: {{name: '${{serviceName}}-virtual-service'}}\n  spec: {{hosts: [x], http: [{{route: [{{destination: {{hosts: x}}}}]}}]}}\n",
        "destination.hosts: unknown field",
    ),
    (
        "placeholder-label-override",
        "defaultNamespace: {D}\nplaceholder: {{labels: {{virtualservice-operator/placeholder-service: 'false'}}}}\n",
        "placeholder",
    ),
]


def test_bad_configs_are_refused_and_nothing_changes(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    api.create_service(ns.default, "keep")
    api.create_service(ns.developers[0], "keep")
    proc = operator.start(operator.config(placeholders=True, virtualServiceTemplate=GOOD_TEMPLATE))
    wait_for(
        lambda: (
            api.vs(ns.default, "keep-virtual-service") and api.service(ns.developers[2], "keep")
        ),
        what="converged",
    )
    wait_for(lambda: proc.idle() and proc.swept(), what="every write of the start-up done")
    before_vs = api.vs(ns.default, "keep-virtual-service")
    before = api.write_count(("services", "virtualservices"))
    for case, text, word in BAD_CONFIGS:
        rejected = proc.logs().count("config rejected")
        api.write_config(operator.config_map, text.format(D=ns.default, N=ns.developers[0]))
        wait_for(
            lambda rejected=rejected: proc.logs().count("config rejected") > rejected,
            what=f"{case} rejected",
        )
        line = [entry for entry in proc.log_lines() if "config rejected" in entry.get("msg", "")][
            -1
        ]
        assert word.lower() in line["error"].lower(), (case, line["error"])
    # The last good config is still in force: a new Service is still handled by it.
    api.create_service(ns.default, "after")
    wait_for(
        lambda: (
            api.vs(ns.default, "after-virtual-service")
            and all(api.service(dev, "after") for dev in ns.developers)
        ),
        what="last good config still works: after's VirtualService and placeholders",
    )
    after_vs = api.vs(ns.default, "keep-virtual-service")
    assert after_vs["metadata"]["resourceVersion"] == before_vs["metadata"]["resourceVersion"]
    # Exactly the test's own Service plus after's VirtualService and placeholders: nothing
    # was rewritten or deleted by any of the rejected configs. The API server counts a
    # request as it completes, so wait for the count to reach the expected figure, then
    # check that it is not above it.
    expected = 1 + 1 + len(ns.developers)

    def written() -> int:
        writes = api.write_count(("services", "virtualservices"))
        return sum(writes.values()) - sum(before.values())

    wait_for(lambda: written() >= expected, what=f"{expected} writes counted")
    assert written() == expected, api.write_count(("services", "virtualservices"))


def test_malformed_virtual_service_under_our_name_is_repaired(
    operator: OperatorFactory, api: Api
) -> None:
    ns = operator.namespaces
    api.create(
        f"/apis/networking.istio.io/v1/namespaces/{ns.default}/virtualservices",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {
                "name": "mal-virtual-service",
                "labels": operator.ours(**{"managed-by": "virtualservice-operator"}),
            },
            "spec": {
                "gateways": ["nonsense"],
                "tcp": [{"route": [{"destination": {"host": "x", "port": {"number": 1}}}]}],
            },
        },
    )
    api.create_service(ns.default, "mal")
    operator.start()
    vs = wait_for(
        lambda: (
            (v := api.vs(ns.default, "mal-virtual-service"))
            and v["spec"].get("hosts") == ["mal"]
            and v
        ),
        what="repaired",
    )
    assert "tcp" not in vs["spec"] and "gateways" not in vs["spec"]


def test_unusual_services_are_handled(operator: OperatorFactory, api: Api) -> None:
    ns = operator.namespaces
    long_name = "l" * 63  # the longest Service name Kubernetes allows
    api.create_service(ns.default, long_name)
    api.create(
        f"/api/v1/namespaces/{ns.default}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "headless"},
            "spec": {"clusterIP": "None", "selector": {"app": "h"}},
        },
    )
    api.create(
        f"/api/v1/namespaces/{ns.developers[0]}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "headless"},
            "spec": {"clusterIP": "None", "selector": {"app": "h"}},
        },
    )
    operator.start(operator.config(placeholders=True))
    wait_for(
        lambda: api.vs(ns.default, f"{long_name}-virtual-service"),
        what="VirtualService for a 63-character name",
    )
    wait_for(
        lambda: api.service(ns.developers[1], long_name), what="placeholder for a 63-character name"
    )
    vs = wait_for(
        lambda: (
            (v := api.vs(ns.default, "headless-virtual-service"))
            and len(v["spec"]["http"]) == 2
            and v
        ),
        what="headless: no ports, one route",
    )
    assert "port" not in vs["spec"]["http"][0]["route"][0]["destination"]
    placeholder = wait_for(
        lambda: api.service(ns.developers[1], "headless"), what="placeholder without ports"
    )
    assert placeholder["spec"]["type"] == "ExternalName"


def test_reliability_doc_lists_every_bad_input() -> None:
    doc = (REPO_ROOT / "docs" / "reliability.md").read_text()
    missing = [case for case, _, _ in BAD_CONFIGS if f"`{case}`" not in doc]
    missing += [
        n
        for n in (
            "test_malformed_virtual_service_under_our_name_is_repaired",
            "test_unusual_services_are_handled",
        )
        if f"`{n}`" not in doc
    ]
    assert not missing, f"docs/reliability.md does not mention: {missing}"
