"""The shipped alerts and dashboard, checked by Prometheus's own promtool.

- `promtool check rules` on the rules of monitoring/prometheusrule.yaml;
- `promtool test rules` on monitoring/tests/alerts-test.yaml: every alert fires when it
  should, with the labels Alertmanager routes on (namespace, job, severity), and is
  silent when it should be; this test holds that each alert has both kinds of case;
- every PromQL expression of the dashboard parses (as a recording rule, with the
  variables filled in) and selects this operator's job and namespace only.

promtool is built from the github.com/prometheus/prometheus module pinned in
hack/tools/prometheus/go.mod (hack/build-prometheus.sh, cached). tests/node/
test_monitoring_on_node.py runs the same rules and queries in a real Prometheus.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtualservice_operator_dev.controlplane import REPO_ROOT

MONITORING = REPO_ROOT / "monitoring"
ROUTING_LABELS = {"namespace", "job", "severity"}
# The dashboard's variables as the default install fills them.
DASHBOARD_VARIABLES = {
    "$job": "virtualservice-operator-metrics",
    "$namespace": "virtualservice-operator-system",
}


@pytest.fixture(scope="module")
def promtool() -> Path:
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-prometheus.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip()) / "promtool"


def _run(promtool: Path, *args: str, cwd: Path) -> str:
    out = subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}"
    return out.stdout


def rule_groups() -> dict[str, Any]:
    """The `spec` of the PrometheusRule: a Prometheus rules file's content."""
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return dict(rule["spec"])


def dashboard_expressions() -> list[str]:
    model = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in model["panels"] for t in p.get("targets", [])]


def fill(expr: str) -> str:
    for name, value in DASHBOARD_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def test_rules_pass_promtool_check_and_their_unit_tests(promtool: Path, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    tests = tmp_path / "alerts-test.yaml"
    tests.write_text((MONITORING / "tests" / "alerts-test.yaml").read_text())
    alerts = [r for g in rule_groups()["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(alerts)} rules found" in _run(
        promtool, "check", "rules", "rules.yaml", cwd=tmp_path
    )
    assert "SUCCESS" in _run(promtool, "test", "rules", tests.name, cwd=tmp_path)


def test_every_alert_has_a_firing_case_with_routing_labels_and_a_silent_one() -> None:
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"]}
    assert "VirtualServiceOperatorForbiddenWrites" in alerts
    cases = yaml.safe_load((MONITORING / "tests" / "alerts-test.yaml").read_text())["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            (fires if check["exp_alerts"] else silent).add(name)
            for alert in check["exp_alerts"]:
                assert set(alert["exp_labels"]) >= ROUTING_LABELS, (case["name"], alert)
    assert alerts - fires == set(), "alerts with no case where they fire"
    assert alerts - silent == set(), "alerts with no case where they stay silent"


def test_dashboard_expressions_parse_and_select_this_operator_only(
    promtool: Path, tmp_path: Path
) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    rules = [{"record": f"dashboard:expr{i}", "expr": fill(e)} for i, e in enumerate(expressions)]
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    _run(promtool, "check", "rules", "dashboard.yaml", cwd=tmp_path)
    for expr in expressions:
        selectors = re.findall(r"[a-z_:]+\{([^}]*)\}", expr)
        assert selectors, expr
        for matchers in selectors:
            assert matchers == 'job="$job",namespace="$namespace"', expr


def test_dashboard_variables_default_to_this_operators_job() -> None:
    model = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    variables = {v["name"]: v for v in model["templating"]["list"]}
    job, namespace = variables["job"], variables["namespace"]
    # Offered only among jobs exporting a series no other operator has.
    assert "virtualservice_operator_" in job["definition"], job["definition"]
    assert job["current"]["value"] == DASHBOARD_VARIABLES["$job"]
    assert namespace["current"]["value"] == DASHBOARD_VARIABLES["$namespace"]
    assert not job["includeAll"] and not namespace["includeAll"]
