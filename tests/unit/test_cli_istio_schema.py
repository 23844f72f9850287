"""check-config and render judge the template by Istio's VirtualService schema, offline;
`check-config --server` without a reachable cluster cannot answer (exit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from virtualservice_operator import cli

# The two mistakes the schema catches and the operator's own checks did not.
BAD = """\
defaultNamespace: prod
developerNamespaces: [qa]
virtualServiceTemplate: |
  apiVersion: networking.istio.io/v1beta1
  kind: VirtualService
  metadata:
    name: "${serviceName}-virtual-service"
  spec:
    hosts: ${serviceName}
    http:
    - route:
      - destination:
          hosts: ${serviceName}.${defaultNamespace}.svc.cluster.local
"""
EXPECTED = [
    'spec.hosts: expected a list, got a string "sample-service"',
    "spec.http[0].route[0].destination.host: is required",
    "spec.http[0].route[0].destination.hosts: unknown field",
]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_check_config_lists_every_schema_violation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check-config", _write(tmp_path, BAD)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("3 problems")
    for line, expected in zip(lines[1:], EXPECTED, strict=True):
        assert line.startswith(f"  - line 3: virtualServiceTemplate: {expected}")
        assert ". Fix: " in line


def test_render_refuses_it_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "--config", _write(tmp_path, BAD), "--service", "cart"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert all(expected in err for expected in EXPECTED)


def test_fixed_template_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixed = BAD.replace("hosts: ${serviceName}\n", "hosts: [${serviceName}]\n").replace(
        "hosts: ${serviceName}.", "host: ${serviceName}."
    )
    assert cli.main(["check-config", _write(tmp_path, fixed)]) == 0
    capsys.readouterr()
    assert cli.main(["render", "--config", _write(tmp_path, fixed), "--service", "cart"]) == 0
    rendered = yaml.safe_load(capsys.readouterr().out)
    assert rendered["spec"]["hosts"] == ["cart"]


def test_server_check_without_a_cluster_cannot_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    fixed = BAD.replace("hosts: ${serviceName}\n", "hosts: [${serviceName}]\n").replace(
        "hosts: ${serviceName}.", "host: ${serviceName}."
    )
    path = _write(tmp_path, fixed)
    assert cli.main(["check-config", "--server", "--kubeconfig", str(kubeconfig), path]) == 3
    out, err = capsys.readouterr()
    assert out.startswith("config OK")  # the offline answer still comes first
    assert "cannot dry-run a VirtualService" in err
    # An invalid config never reaches the server: offline problems, exit 1.
    assert (
        cli.main(
            ["check-config", "--server", "--kubeconfig", str(kubeconfig), _write(tmp_path, BAD)]
        )
        == 1
    )


def test_help_mentions_server(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["check-config", "--help"])
    out = capsys.readouterr().out
    assert "--server" in out and "dry-run" in out
