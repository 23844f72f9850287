"""A right missing in a namespace the operator was configured for: a clear error (log
line naming the right, the namespace and the fix; Warning Event; metric), the rest of the
work done, and the write retried until the right is granted.

The ServiceAccount here has what the chart's `rbac.scope=namespaced` grants, but for one
developer namespace left out: cluster-wide read, writes only where bound.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import OPERATOR_NS, Api, wait_for

pytestmark = pytest.mark.integration


def test_missing_write_right_is_reported_and_retried_until_granted(
    operator: OperatorFactory, api: Api, tmp_path, request: pytest.FixtureRequest
) -> None:  # type: ignore[no-untyped-def]
    ns = operator.namespaces
    cp = operator.cp
    granted, missing = ns.developers[0], ns.developers[1]
    sa = f"narrow-{ns.suffix}"
    user = f"{OPERATOR_NS}:{sa}"

    def remove_what_outlives_the_namespaces() -> None:
        # The operator's namespace and the cluster are shared: a binding left there shows
        # up in another test's RBAC audit (`kubectl get rolebindings,clusterrolebindings`).
        # The operator goes first, so that it still may release its Lease.
        for proc in operator.started:
            proc.stop()
        cp.kubectl("delete", "rolebinding", sa, "-n", OPERATOR_NS, "--ignore-not-found")
        for where in (ns.default, granted, missing):  # their namespaces go, but not at once
            cp.kubectl("delete", "rolebinding", f"{sa}-write", "-n", where, "--ignore-not-found")
        cp.kubectl("delete", "serviceaccount", sa, "-n", OPERATOR_NS, "--ignore-not-found")
        for what in ("read", "events", "write"):
            cp.kubectl("delete", "clusterrolebinding", f"{sa}-{what}", "--ignore-not-found")
            cp.kubectl("delete", "clusterrole", f"{sa}-{what}", "--ignore-not-found")

    request.addfinalizer(remove_what_outlives_the_namespaces)
    cp.kubectl("create", "serviceaccount", sa, "-n", OPERATOR_NS)
    cp.kubectl(
        "create", "clusterrole", f"{sa}-read",
        "--verb=get,list,watch", "--resource=services,virtualservices.networking.istio.io",
    )  # fmt: skip
    cp.kubectl(
        "create", "clusterrolebinding", f"{sa}-read",
        f"--clusterrole={sa}-read", f"--serviceaccount={user}",
    )  # fmt: skip
    cp.kubectl("create", "clusterrole", f"{sa}-events", "--verb=create,patch", "--resource=events")
    cp.kubectl(
        "create", "clusterrolebinding", f"{sa}-events",
        f"--clusterrole={sa}-events", f"--serviceaccount={user}",
    )  # fmt: skip
    cp.kubectl(
        "create", "rolebinding", sa, "-n", OPERATOR_NS,
        "--role=virtualservice-operator-leader-election", f"--serviceaccount={user}",
    )  # fmt: skip
    cp.kubectl(
        "create", "clusterrole", f"{sa}-write",
        "--verb=create,update,patch,delete",
        "--resource=services,virtualservices.networking.istio.io",
    )  # fmt: skip
    for where in (ns.default, granted):
        cp.kubectl(
            "create", "rolebinding", f"{sa}-write", "-n", where,
            f"--clusterrole={sa}-write", f"--serviceaccount={user}",
        )  # fmt: skip
    kubeconfig = cp.service_account_kubeconfig(OPERATOR_NS, sa, tmp_path / "narrow.kubeconfig")
    narrow = dataclasses.replace(operator, kubeconfig=kubeconfig)  # stopped with the others

    api.create_service(ns.default, "cart")
    proc = narrow.start(operator.config(placeholders=True))
    wait_for(lambda: api.vs(ns.default, "cart-virtual-service"), what="VirtualService")
    wait_for(lambda: api.service(granted, "cart"), what="placeholder where the right is")
    line = wait_for(
        lambda: next((x for x in proc.log_lines() if x["msg"].startswith("forbidden:")), None),
        30,
        "the forbidden log line",
    )
    assert f"may not create services in namespace {missing}" in line["msg"]
    assert "rbac.scope=namespaced" in line["msg"] and line["level"] == "error"
    assert (
        proc.metric(
            "virtualservice_operator_forbidden_writes_total", namespace=missing, verb="create"
        )
        >= 1
    )
    events = cp.kubectl(
        "get", "events", "-n", ns.default, "--field-selector=reason=MissingPermission", "-o", "name"
    ).stdout
    assert events.strip()
    assert api.service(missing, "cart") is None
    # RBAC from before the operator watched namespaces: said once, and the operator works.
    refused = [x for x in proc.log_lines() if "may not list and watch namespaces" in x["msg"]]
    assert len(refused) == 1 and refused[0]["level"] == "error", refused

    # Granting the right is all it takes: the queue's back-off retries the write.
    cp.kubectl(
        "create", "rolebinding", f"{sa}-write", "-n", missing,
        f"--clusterrole={sa}-write", f"--serviceaccount={user}",
    )  # fmt: skip
    wait_for(lambda: api.service(missing, "cart"), 60, "placeholder once the right is granted")
