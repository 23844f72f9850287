"""`status` and `explain` read the operator's cache: one list per informer, then index
look-ups, a constant number per name (so `status` is linear in the cluster's size)."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from virtualservice_operator.commands.inspect import ClusterView, evaluate, load_view
from virtualservice_operator.commands.output import Style
from virtualservice_operator.commands.status import collect, judged, namespace_notes, render_table
from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.constants import (
    INSTANCE_LABEL,
    others_selector,
    own_selector,
)
from virtualservice_operator.domain.desired import compute_desired
from virtualservice_operator.domain.model import ServiceInfo
from virtualservice_operator.kube.client import Forbidden
from virtualservice_operator.runtime.informer import Informer

D, DEVS = "prod", ("dev-a", "dev-b", "dev-c")
CONFIG = OperatorConfig(
    default_namespace=D, developer_namespaces=DEVS, enable_placeholder_services=True
)
JSON = dict[str, Any]


class FakeCluster:
    """The list side of the API server: namespace, label and field selectors, pages."""

    def __init__(self, services: list[JSON], virtual_services: list[JSON]) -> None:
        namespaces = [{"metadata": {"name": ns, "resourceVersion": "1"}} for ns in (D, *DEVS)]
        self.objects = {
            "services": services,
            "virtualservices": virtual_services,
            "namespaces": namespaces,
        }
        self.lists: list[tuple[str, str | None, str | None, str | None]] = []

    async def list_pages(
        self,
        kind: Any,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> AsyncIterator[tuple[list[JSON], str]]:
        self.lists.append((kind.plural, namespace, label_selector, field_selector))
        found = [
            o
            for o in self.objects[kind.plural]
            if namespace in (None, o["metadata"].get("namespace"))
            and _labels_match(o, label_selector)
            and (not field_selector or field_selector == f"metadata.name={o['metadata']['name']}")
        ]
        for i in range(0, max(len(found), 1), limit):
            yield found[i : i + limit], "42"

    async def list(
        self, kind: Any, namespace: str | None = None, **kw: Any
    ) -> tuple[list[JSON], str]:
        items = [o async for page, _ in self.list_pages(kind, namespace, **kw) for o in page]
        return items, "42"


def _labels_match(obj: JSON, selector: str | None) -> bool:
    """The two selectors the cache uses: this instance's objects, and the rest."""
    if not selector:
        return True
    value = (obj["metadata"].get("labels") or {}).get(INSTANCE_LABEL)
    if selector == own_selector(CONFIG.instance):
        return value == CONFIG.instance
    assert selector == others_selector(CONFIG.instance), selector
    return value != CONFIG.instance


_uids = itertools.count()


def _service(ns: str, name: str) -> JSON:
    meta = {"name": name, "namespace": ns, "uid": f"u{next(_uids)}", "resourceVersion": "1"}
    return {"metadata": meta, "spec": {"ports": [{"name": "http", "port": 80}]}}


def converged(names: int) -> FakeCluster:
    """`names` Services in D, a real one in dev-a for every third, and what the operator
    makes for them (in sync), plus an unmanaged VirtualService in D naming one host."""
    services: list[JSON] = []
    vss: list[JSON] = []
    for i in range(names):
        name = f"svc-{i}"
        real = [_service(D, name)] + ([_service("dev-a", name)] if i % 3 == 0 else [])
        services += real
        desired = compute_desired(
            CONFIG, name, {s.namespace: s for s in map(ServiceInfo.from_dict, real)}
        )
        made = [
            copy.deepcopy(desired.virtual_service),
            *copy.deepcopy(dict(desired.placeholders)).values(),
        ]
        for obj in made:
            obj["metadata"].update(uid=f"u{next(_uids)}", resourceVersion="2")
        vss.append(made[0])
        services += made[1:]
    vss.append(
        {
            "metadata": {"name": "gateway", "namespace": D, "resourceVersion": "3"},
            "spec": {"hosts": ["svc-1", "example.com"]},
        }
    )
    return FakeCluster(services, vss)


def _view(cluster: FakeCluster, name: str | None = None) -> ClusterView:
    return asyncio.run(load_view(cluster, CONFIG, name))  # type: ignore[arg-type]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts the cache's reads: `get` and `by_index` (look-ups), `values` (full walks)."""
    counts: Counter[str] = Counter()
    for method in ("get", "by_index", "values"):
        original = getattr(Informer, method)

        def counted(self: Any, *args: Any, _f: Any = original, _m: str = method) -> Any:
            counts[_m] += 1
            return _f(self, *args)

        monkeypatch.setattr(Informer, method, counted)
    yield counts


def test_status_work_is_linear_in_the_names(lookups: Counter[str]) -> None:
    work = {}
    for names in (30, 60, 120):
        view = _view(converged(names))
        known = len(view.names())  # the svc-i, and "example" (a host of the unmanaged one)
        lookups.clear()
        states = list(judged(view))
        # What the old code did per name (every VirtualService checked) shows here: each
        # name is handed its own VirtualService, and the unmanaged one naming its host.
        assert sum(len(s.virtual_services) for s in states) == names + 2  # svc-1, example
        # Per name: one `get` per watched namespace, one index look-up per VirtualService
        # informer; the whole cache is walked once (the names), not once per name.
        # (And once, for all names, one per watched namespace: does it exist?)
        assert lookups["get"] == (known + 1) * len(CONFIG.watched_namespaces)
        assert lookups["by_index"] == known * 2
        # (The namespaces' informer is read by name, never walked.)
        assert lookups["values"] == len(view.cache.informers()) - 1
        work[known] = lookups["get"] - len(CONFIG.watched_namespaces) + lookups["by_index"]
        records = collect(view)
        assert [r["service"] for r in records] == sorted(f"svc-{i}" for i in range(names))
        # svc-1 is held back: the unmanaged VirtualService routes its host for the mesh.
        assert [r["service"] for r in records if not r["inSync"]] == ["svc-1"]
    # The same cost per name at every size: linear (the old code grew with names²).
    assert len({total / known for known, total in work.items()}) == 1


def test_status_reports_drift_from_the_cache() -> None:
    cluster = converged(6)
    vs = next(
        v
        for v in cluster.objects["virtualservices"]
        if v["metadata"]["name"] == "svc-2-virtual-service"
    )
    vs["spec"]["http"] = []
    cluster.objects["services"] = [
        s
        for s in cluster.objects["services"]
        if (s["metadata"]["namespace"], s["metadata"]["name"]) != ("dev-b", "svc-4")
    ]
    view = _view(cluster)
    states = {s.name: s for s in judged(view)}
    assert [(a.verb, a.kind, a.name) for a in states["svc-2"].actions] == [
        ("update", "VirtualService", "svc-2-virtual-service")
    ]
    assert [(a.verb, a.namespace) for a in states["svc-4"].actions] == [("create", "dev-b")]
    assert sum(1 for s in states.values() if not s.in_sync) == 3
    # The unmanaged VirtualService routing svc-1 for the mesh holds ours back.
    assert states["svc-1"].host_conflicts and not states["svc-1"].actions
    drift = [r for r in collect(view) if not r["inSync"]]
    assert [(r["service"], len(r["actions"])) for r in drift] == [
        ("svc-1", 0),
        ("svc-2", 1),
        ("svc-4", 1),
    ]
    assert drift[0]["hostConflicts"][0].startswith("VirtualService prod/gateway (no label")
    assert "held: host conflict (explain NAME)" in render_table(drift, Style())[1]


def test_explain_lists_only_the_name(lookups: Counter[str]) -> None:
    cluster = converged(50)
    view = _view(cluster, "svc-3")
    # Every Service list is by name; ours by the VirtualService's name; only the others
    # in D (as the reconciler's fresh read) are listed whole.
    assert all(f == "metadata.name=svc-3" for kind, _, _, f in cluster.lists if kind == "services")
    managed = [
        f
        for kind, _, sel, f in cluster.lists
        if kind == "virtualservices" and "!=" not in (sel or "")
    ]
    assert managed == ["metadata.name=svc-3-virtual-service"]
    state = evaluate(view, "svc-3")
    assert state.in_sync and set(state.services) == {D, "dev-a", "dev-b", "dev-c"}
    assert state.services["dev-a"].is_placeholder is False
    assert state.managed and not state.elsewhere
    assert view.names() == ["example", "svc-1", "svc-3"]  # the unmanaged one names two


def test_explain_finds_the_name_in_namespaces_not_watched() -> None:
    cluster = converged(3)
    cluster.objects["services"].append(_service("kube-system", "svc-0"))
    cluster.objects["services"].append(_service("other", "svc-0"))
    state = evaluate(_view(cluster, "svc-0"), "svc-0")
    assert sorted(state.elsewhere) == ["kube-system", "other"]


def test_status_names_missing_namespaces_and_says_when_it_cannot_list_them() -> None:
    cluster = converged(3)
    cluster.objects["namespaces"] = [
        n for n in cluster.objects["namespaces"] if n["metadata"]["name"] != "dev-b"
    ]
    view = _view(cluster)
    assert namespace_notes(view) == [
        "namespace dev-b does not exist: nothing is written there until it exists"
    ]
    # Nothing is wanted there, so every name is still in sync.
    assert all(s.in_sync for s in judged(view) if s.name != "svc-1")

    class NoNamespaces(FakeCluster):
        async def list_pages(self, kind: Any, *args: Any, **kw: Any) -> AsyncIterator[Any]:
            if kind.plural == "namespaces":
                raise Forbidden(403, "Forbidden", "namespaces is forbidden")
            async for page in super().list_pages(kind, *args, **kw):
                yield page

    refused = NoNamespaces(cluster.objects["services"], cluster.objects["virtualservices"])
    assert namespace_notes(_view(refused)) == [
        "cannot list namespaces with these credentials: all taken to exist"
    ]
