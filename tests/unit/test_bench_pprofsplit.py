"""bench.pprofsplit: `go tool pprof -traces` read back, and each stack in one part only."""

from __future__ import annotations

import pytest
from bench.pprofsplit import (
    APISERVER_RULES,
    OPERATOR_RULES,
    OTHER,
    _seconds,
    parse_traces,
    split,
)

TRACES = """File: kube-apiserver
Type: cpu
Duration: 30s, Total samples = 31.67s (105.56%)
-----------+-------------------------------------------------------
      10ms   runtime.scanSpan
             runtime.gcDrain
             runtime.gcBgMarkWorker
-----------+-------------------------------------------------------
     1.20s   sigs.k8s.io/json/internal/golang/encoding/json.(*decodeState).object
             k8s.io/apimachinery/pkg/runtime/serializer/json.(*Serializer).Decode
             k8s.io/apiserver/pkg/endpoints/handlers.CreateResource.createHandler.func1
             net/http.HandlerFunc.ServeHTTP
-----------+-------------------------------------------------------
      30ms   runtime.gcAssistAlloc1
             runtime.mallocgc
             k8s.io/apimachinery/pkg/runtime/serializer/json.(*Serializer).Decode
             net/http.HandlerFunc.ServeHTTP
-----------+-------------------------------------------------------
     500us   crypto/tls.(*Conn).Write (inline)
             k8s.io/apiserver/pkg/endpoints/handlers.(*WatchServer).HandleHTTP
-----------+-------------------------------------------------------
      20ms   main.somethingElse
-----------+-------------------------------------------------------
      40ms   runtime.scanSpan
             runtime.gcDrainMarkWorkerIdle
             runtime.gcBgMarkWorker
-----------+-------------------------------------------------------
"""


def test_parse_traces_reads_each_stack_leaf_first() -> None:
    traces = parse_traces(TRACES)
    assert [round(v, 4) for v, _ in traces] == [0.01, 1.2, 0.03, 0.0005, 0.02, 0.04]
    assert traces[0][1] == ["runtime.scanSpan", "runtime.gcDrain", "runtime.gcBgMarkWorker"]
    assert traces[3][1][0] == "crypto/tls.(*Conn).Write (inline)"


def test_split_gives_each_stack_to_the_first_rule_it_matches() -> None:
    parts = split(parse_traces(TRACES), APISERVER_RULES)
    gc = parts["GC (mark, assist, sweep)"]
    # The assist inside a decode is GC, listed first; the decode's own time is the decode's.
    assert gc == pytest.approx(0.04)
    # Marking on an idle P is its own part, before the rest of GC.
    assert parts["GC: idle mark workers"] == pytest.approx(0.04)
    assert parts["request body: JSON decode (CRD schema included)"] == pytest.approx(1.2)
    # TLS before the watch: a watch's encryption is TLS.
    assert parts["TLS"] == pytest.approx(0.0005)
    assert parts["watch: events encoded and sent to watchers"] == 0.0
    assert parts[OTHER] == pytest.approx(0.02)
    assert sum(parts.values()) == pytest.approx(1.3005)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10ms", 0.01), ("1.20s", 1.2), ("350us", 0.00035), ("2ns", 2e-9), ("1.5mins", 90.0)],
)
def test_seconds(text: str, seconds: float) -> None:
    assert _seconds(text) == pytest.approx(seconds)


def test_seconds_refuses_what_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="not a pprof duration"):
        _seconds("12")


OPERATOR_TRACES = """Type: cpu
-----------+-------------------------------------------------------
      50ms   SSLObject.write
             SSLProtocol._write_appdata
             ClientRequest.send
             KubeClient._request
             EventRecorder._drain
-----------+-------------------------------------------------------
      30ms   SSLObject.read
             SSLProtocol._do_read
             _SelectorSocketTransport._read_ready
             Handle._run
-----------+-------------------------------------------------------
      20ms   JSONEncoder.iterencode
             dumps
             KubeClient._request
             VirtualServiceReconciler._execute
-----------+-------------------------------------------------------
      10ms   Informer._put
             Informer.upsert
             ClusterCache.record_write
             KubeClient.create
-----------+-------------------------------------------------------
      40ms   ServiceInfo.from_dict
             compute_desired
             VirtualServiceReconciler.reconcile
             Controller._process
-----------+-------------------------------------------------------
       5ms   EpollSelector.select
             BaseEventLoop._run_once
-----------+-------------------------------------------------------
"""


def test_operator_rules_give_events_their_posts_and_tls_its_reads() -> None:
    parts = split(parse_traces(OPERATOR_TRACES), OPERATOR_RULES)
    got = {k: round(v, 4) for k, v in parts.items() if v}
    assert got == {
        "Events (recorder and their POSTs)": 0.05,
        "TLS (ssl)": 0.03,
        "request bodies: json.dumps": 0.02,
        "cache: a write's answer stored (Informer._put, indexes)": 0.01,
        "reconcile: desired state and plan": 0.04,
        OTHER: 0.005,
    }
