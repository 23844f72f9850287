"""A configured namespace that does not exist is a state, not an error storm.

At the benchmark's M scale (1,000 Services in the default namespace, 5 developer
namespaces, placeholders on) with two developer namespaces missing: one warning and one
Warning Event on the ConfigMap per missing namespace, a gauge, no request that fails and
no retry while they are missing; `explain` and `status` say so; the placeholders appear
as soon as a namespace is created, and the same when one is deleted while the operator runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import OPERATOR_NS, Api, sample_sum, wait_for
from virtualservice_operator import cli
from virtualservice_operator_dev.controlplane import ControlPlane

pytestmark = pytest.mark.integration

NAMES = 1000  # the benchmark's M scale


def _create_services(api: Api, namespace: str, names: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: api.create_service(namespace, name), names))


def _count(api: Api, namespace: str, selector: str) -> int:
    found = api.get(f"/api/v1/namespaces/{namespace}/services?labelSelector={selector}")
    return len(found["items"]) if found else 0


def _events(cp: ControlPlane, reason: str, name: str) -> list[dict[str, Any]]:
    out = cp.kubectl(
        "get", "events", "-n", OPERATOR_NS, "-o", "json",
        f"--field-selector=reason={reason},involvedObject.name={name}",
    )  # fmt: skip
    return list(json.loads(out.stdout)["items"])


def _cli(
    capsys: pytest.CaptureFixture[str], cp: ControlPlane, operator: OperatorFactory, *args: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(
        [*args, "--kubeconfig", str(cp.admin_kubeconfig), "--config-map-name", operator.config_map]
    )
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cleared(operator: OperatorFactory, api: Api) -> Iterator[None]:
    """The 5,000 objects this test makes go with it: other tests list across namespaces."""
    yield
    for proc in operator.started:
        proc.stop()
    ns = operator.namespaces
    for namespace in (ns.default, *ns.developers, f"team-x-{ns.suffix}"):
        for kind in ("services", "virtualservices"):
            group = "/api/v1" if kind == "services" else "/apis/networking.istio.io/v1"
            path = f"{group}/namespaces/{namespace}/{kind}"
            if api.delete(path) not in (200, 404):  # deletecollection, else one by one
                for item in (api.get(path) or {}).get("items", []):
                    api.delete(f"{path}/{item['metadata']['name']}")


def test_missing_namespaces_at_m_scale_are_said_once_and_acted_on_when_created(
    operator: OperatorFactory,
    api: Api,
    control_plane: ControlPlane,
    capsys: pytest.CaptureFixture[str],
    cleared: None,
) -> None:
    cp, ns = control_plane, operator.namespaces
    present = [*ns.developers]  # three that exist
    missing = [f"team-x-{ns.suffix}", f"team-y-{ns.suffix}"]
    names = [f"svc-{i}" for i in range(NAMES)]
    _create_services(api, ns.default, names)
    config = operator.config(placeholders=True, developerNamespaces=[*present, *missing])
    proc = operator.start(config)
    placeholder = "virtualservice-operator/placeholder-service%3Dtrue"
    for dev in present:
        wait_for(lambda dev=dev: _count(api, dev, placeholder) == NAMES, 120, f"placeholders {dev}")
    wait_for(lambda: proc.swept() and proc.idle(NAMES), 60, "the operator idle")

    # Said once per missing namespace: one warning, one Event on the ConfigMap, a gauge.
    # (At the default level, info: each name's reasons are logged at debug, which the
    # tests turn on.)
    lines = [x for x in proc.log_lines() if x["level"] != "debug"]
    for gone in missing:
        said = [x for x in lines if gone in x["msg"]]
        assert len(said) == 1, said
        assert said[0]["level"] == "warning"
        assert said[0]["msg"].startswith(f"namespace {gone} does not exist")
        [event] = [
            e for e in _events(cp, "NamespaceMissing", operator.config_map) if gone in e["message"]
        ]
        assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "ConfigMap"
    assert not [x for x in lines if x["level"] == "error"], "no error while missing"
    assert proc.metric("virtualservice_operator_missing_namespaces") == 2
    # No request failed and nothing was retried: not one write was sent to them.
    for code in ("404", "403", "409"):
        assert proc.metric("rest_client_requests_total", code=code) == 0, code
    assert proc.metric("workqueue_retries_total") == 0
    assert proc.metric("virtualservice_operator_writes_total", kind="Service") == NAMES * 3
    requests_while_missing = proc.metric("rest_client_requests_total")
    log_lines_while_missing = len(lines)
    print(
        f"\nat {NAMES} names x 5 developer namespaces, 2 missing: "
        f"{requests_while_missing:.0f} requests, {log_lines_while_missing} log lines"
    )

    # explain and status say it.
    code, out, _ = _cli(capsys, cp, operator, "explain", "svc-7")
    assert code == 0, out  # in sync: nothing can be written there
    assert f"namespace {missing[0]} does not exist: nothing is written there" in out
    code, out, err = _cli(capsys, cp, operator, "status", "--check", "-o", "json")
    assert code == 0, out
    assert f"namespace {missing[1]} does not exist" in err
    assert all(r["inSync"] for r in json.loads(out))
    code, out, _ = _cli(capsys, cp, operator, "status")
    assert out.splitlines()[0].startswith(f"namespace {missing[0]} does not exist")

    # Created: the placeholders follow at once (not at the next -sync-period).
    cp.kubectl("create", "namespace", missing[0])
    wait_for(lambda: _count(api, missing[0], placeholder) == NAMES, 60, "placeholders on creation")
    wait_for(lambda: proc.metric("virtualservice_operator_missing_namespaces") == 1, 10, "gauge")

    # A developer namespace deleted while the operator runs (here it stays Terminating:
    # the test's control plane runs no namespace controller): said once, nothing retried.
    retries = proc.metric("workqueue_retries_total")
    before = proc.metric("virtualservice_operator_writes_total")
    cp.kubectl("delete", "namespace", present[0], "--wait=false")
    said = wait_for(
        lambda: [x for x in proc.log_lines() if x["msg"].startswith(f"namespace {present[0]} i")],
        10,
        "the deletion said",
    )
    assert said[0]["msg"].startswith(f"namespace {present[0]} is being deleted")
    api.create_service(ns.default, "late")  # a new name: no placeholder tried there
    wait_for(lambda: api.service(missing[0], "late"), 30, "the new name's placeholders")
    wait_for(proc.idle, 30, "idle")
    assert proc.metric("workqueue_retries_total") == retries
    for code in ("404", "403", "409"):
        assert proc.metric("rest_client_requests_total", code=code) == 0, code
    # The VirtualService, and placeholders in the three namespaces that exist.
    assert proc.metric("virtualservice_operator_writes_total") - before == 4
    logged = [x for x in proc.log_lines() if present[0] in x["msg"] and x["level"] != "debug"]
    assert len(logged) == 1, logged


async def test_a_write_into_a_missing_or_terminating_namespace_is_namespace_gone(
    control_plane: ControlPlane, namespaces: Any
) -> None:
    """The race the namespace informer cannot close (a namespace deleted between its
    event and a write): the API server's answers are told apart from a missing right or a
    conflict, as the server sends them (404 naming the namespace, 403 NamespaceTerminating)."""
    from virtualservice_operator.domain.plan import Action
    from virtualservice_operator.kube.client import KubeClient
    from virtualservice_operator.operator.cache import ClusterCache
    from virtualservice_operator.operator.executor import Executor, NamespaceGone
    from virtualservice_operator.runtime.metrics import (
        OperatorMetrics,
        exposition,
        parse_exposition,
    )

    terminating = namespaces.developers[0]
    control_plane.kubectl("delete", "namespace", terminating, "--wait=false")
    client = KubeClient.from_kubeconfig(str(control_plane.admin_kubeconfig))
    metrics = OperatorMetrics()
    executor = Executor(client, ClusterCache(client, lambda n: None, instance="x"), metrics)
    try:
        for ns in (f"never-{namespaces.suffix}", terminating):
            body = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "cart", "namespace": ns},
                "spec": {"type": "ExternalName", "externalName": "cart.prod.svc.cluster.local"},
            }
            action = Action(
                verb="create", kind="Service", namespace=ns, name="cart", body=body, reason="t"
            )
            with pytest.raises(NamespaceGone) as e:
                await executor.execute(action)
            assert e.value.action is action
        # Neither a conflict nor a missing permission.
        scraped = parse_exposition(exposition(metrics.registry))
        for counter in ("conflicts_total", "forbidden_writes_total"):
            assert sample_sum(scraped, f"virtualservice_operator_{counter}") == 0
    finally:
        await client.close()
