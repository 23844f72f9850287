"""Leader election between real operator processes (`-leader-elect`), on the one Lease
the RBAC of deployments/deployment.yaml lets the operator touch:
`virtualservice-operator-leader` in `virtualservice-operator-system`.

Because that Lease is unique, these tests must not run in parallel with one another
(pytest runs them one at a time) and each starts and ends with the Lease deleted.
Short timings (4 s / 3 s / 0.5 s) keep them quick; the measured takeover and shutdown
figures are printed (run with `-s`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import OperatorFactory
from tests.integration.harness import OPERATOR_NS, Api, OperatorProcess, wait_for
from virtualservice_operator.runtime.metrics import parse_exposition

pytestmark = pytest.mark.integration

LEASE_NAME = "virtualservice-operator-leader"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NS}/leases/{LEASE_NAME}"
LEASE, RENEW, RETRY = 4.0, 3.0, 0.5
# Both flag forms, Go durations and plain seconds.
ELECT = ["-leader-elect", "-lease-duration=4s", "-renew-deadline=3s", "-retry-period=500ms"]
ELECT_2 = [
    "--leader-elect=true",
    "--lease-duration=4",
    "--renew-deadline=3s",
    "--retry-period=0.5s",
]
SHUTDOWN_BOUND = 10.0


def _leading(proc: OperatorProcess) -> bool:
    return proc.metric("leader_election_master_status", name=LEASE_NAME) == 1


INVENTORY = (
    "virtualservice_operator_managed_virtualservices",
    "virtualservice_operator_developer_routes",
    "virtualservice_operator_placeholder_services",
)


def _inventory(proc: OperatorProcess) -> list[str]:
    """The inventory gauges `proc` exports."""
    return [n for n, _ in parse_exposition(proc.metrics()) if n in INVENTORY]


def _identity(proc: OperatorProcess) -> str:
    line = wait_for(
        lambda: next(
            (x for x in proc.log_lines() if x.get("msg") == "attempting to acquire leader lease"),
            None,
        ),
        what="election started",
    )
    return str(line["identity"])


def _lease(api: Api) -> dict[str, Any]:
    lease = api.get(LEASE_PATH)
    assert lease is not None, "no Lease"
    return dict(lease["spec"])


def _writes_logged(proc: OperatorProcess) -> list[dict[str, Any]]:
    return [
        x
        for x in proc.log_lines()
        if str(x.get("msg", "")).endswith((" created", " updated", " deleted", " released"))
    ]


@pytest.fixture
def electing(operator: OperatorFactory, api: Api) -> Iterator[OperatorFactory]:
    """The operator factory, with the Lease deleted before and after (processes first)."""
    api.delete(LEASE_PATH)
    yield operator
    for proc in operator.started:
        proc.stop()
    api.delete(LEASE_PATH)


def test_one_leader_writes_and_standby_takes_over_after_sigkill(
    electing: OperatorFactory, api: Api, kubectl: Any
) -> None:
    ns = electing.namespaces
    api.create_service(ns.default, "le-a")
    leader = electing.start(extra_args=ELECT)
    wait_for(lambda: _leading(leader), what="first instance leads")
    standby = electing.start(write_config=False, extra_args=ELECT_2)  # ready: caches synced
    leader_id, standby_id = _identity(leader), _identity(standby)
    wait_for(
        lambda: api.vs(ns.default, "le-a-virtual-service"), what="VirtualService by the leader"
    )
    api.create_service(ns.default, "le-b")
    wait_for(lambda: api.vs(ns.default, "le-b-virtual-service"), what="second VirtualService")

    # The guide's check: the Lease is there, held by the leader.
    table = kubectl("get", "lease", "-n", OPERATOR_NS).stdout
    assert LEASE_NAME in table and leader_id in table, table
    spec = _lease(api)
    assert spec["holderIdentity"] == leader_id
    assert spec["leaseDurationSeconds"] == 4
    # Let the leader renew a few times: the standby stays a standby all along.
    seen = {spec["renewTime"]}

    def renewed_twice() -> bool:
        seen.add(_lease(api)["renewTime"])
        return len(seen) >= 3

    wait_for(renewed_twice, timeout=3 * RENEW, what="two renewals")

    assert _leading(leader) and not _leading(standby)
    assert leader.metric("virtualservice_operator_writes_total") >= 2
    assert standby.metric("virtualservice_operator_writes_total") == 0
    assert standby.metric("controller_runtime_reconcile_total") == 0
    assert standby.metric("rest_client_requests_total", method="POST") == 0
    assert _writes_logged(standby) == []
    assert any(x.get("msg") == f"new leader observed {leader_id}" for x in standby.log_lines())
    # The inventory gauges come from the leader only: a dashboard's sum counts each once.
    assert leader.metric("virtualservice_operator_managed_virtualservices") >= 2
    assert not _inventory(standby), _inventory(standby)

    started = time.monotonic()
    leader.kill()
    wait_for(
        lambda: _leading(standby), timeout=LEASE + 5 + 5, what="standby takes over", interval=0.05
    )
    takeover = time.monotonic() - started
    print(f"\ntakeover after SIGKILL of the leader: {takeover:.3f}s (lease duration {LEASE}s)")
    assert takeover < LEASE + 5
    assert _lease(api)["holderIdentity"] == standby_id
    api.create_service(ns.default, "le-c")
    wait_for(lambda: api.vs(ns.default, "le-c-virtual-service"), what="the new leader works")
    assert standby.metric("virtualservice_operator_writes_total") >= 1
    assert set(_inventory(standby)) == set(INVENTORY)


def test_sigterm_releases_the_lease_and_the_successor_starts_at_once(
    electing: OperatorFactory, api: Api
) -> None:
    ns = electing.namespaces
    api.create_service(ns.default, "rel")
    leader = electing.start(extra_args=ELECT)
    wait_for(lambda: _leading(leader), what="first instance leads")
    successor = electing.start(write_config=False, extra_args=ELECT)
    successor_id = _identity(successor)
    wait_for(lambda: api.vs(ns.default, "rel-virtual-service"), what="VirtualService")

    started = time.monotonic()
    code = leader.stop(signal.SIGTERM)
    shutdown = time.monotonic() - started
    wait_for(lambda: _leading(successor), timeout=LEASE + 5, what="successor leads", interval=0.02)
    handover = time.monotonic() - started
    print(
        f"\nleader SIGTERM: exit {code} after {shutdown:.3f}s; successor leads {handover:.3f}s after the signal"
    )
    assert code == 0
    assert shutdown < SHUTDOWN_BOUND
    # Released, not expired: the successor did not wait out the 4 s lease.
    assert handover < LEASE / 2, handover
    lines = leader.log_lines()
    assert any(x.get("msg") == "released leader lease" for x in lines)
    assert lines[-1]["msg"] == "stopped" and lines[-1]["exit_code"] == 0
    assert _lease(api)["holderIdentity"] == successor_id
    api.create_service(ns.default, "rel-2")
    wait_for(lambda: api.vs(ns.default, "rel-2-virtual-service"), what="the successor works")


def test_leader_that_loses_its_lease_stops_at_once_and_exits_nonzero(
    electing: OperatorFactory, api: Api, kubectl: Any
) -> None:
    ns = electing.namespaces
    # Work for the leader to be in the middle of: queued before it leads, so that it
    # cannot finish (it writes fast) before the loss is noticed.
    names = [f"lost-{i:03d}" for i in range(400)]
    for name in names:
        api.create_service(ns.default, name)
    leader = electing.start(electing.config(placeholders=True), extra_args=ELECT)
    wait_for(lambda: _leading(leader), what="leads")
    wait_for(
        lambda: api.vs(ns.default, "lost-000-virtual-service"), what="work under way", interval=0.01
    )

    kubectl(
        "patch",
        "lease",
        LEASE_NAME,
        "-n",
        OPERATOR_NS,
        "--type=merge",
        "-p",
        '{"spec":{"holderIdentity":"intruder"}}',
    )
    # From the Lease's change (kubectl has returned), not from kubectl's own start.
    started = time.monotonic()
    assert leader.proc is not None
    wait_for(
        lambda: leader.proc is not None and leader.proc.poll() is not None,
        timeout=15,
        what="leader exits",
    )
    elapsed = time.monotonic() - started
    print(
        f"\nleader exit after its Lease was taken: {elapsed:.3f}s, exit code {leader.proc.returncode}"
    )
    assert leader.proc.returncode == 1, leader.logs()[-3000:]
    assert elapsed < RETRY * 2 + 2.0  # noticed on the next renewal, then out

    lines = leader.log_lines()
    lost = next(i for i, x in enumerate(lines) if x.get("msg") == "lost leadership")
    assert lines[lost]["holder"] == "intruder"
    # Nothing written after the loss was seen: the reconcile in flight is cancelled.
    assert [x for x in lines[lost:] if x in _writes_logged(leader)] == []
    assert any(
        x.get("msg") == "lost leadership: stopping at once" and x["level"] == "error" for x in lines
    )
    assert lines[-1]["msg"] == "stopped" and lines[-1]["exit_code"] == 1
    # The loss came in the middle of the work (else the check above proves nothing).
    assert any(api.vs(ns.default, f"{name}-virtual-service") is None for name in names)
    # The Lease is not "released" by a loser: the intruder keeps it.
    assert _lease(api)["holderIdentity"] == "intruder"
