"""check-config and render judge the template by Istio's VirtualService schema, offline;
`check-config --server` without a reachable cluster cannot answer (exit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from virtualservice_operator import cli
from virtualservice_operator.domain.config import OperatorConfig
from virtualservice_operator.domain.schema import validate_virtual_service
from virtualservice_operator.kube.client import ApiError, Forbidden, Invalid, NotFound, ServerError
from virtualservice_operator.operator.dryrun import is_refusal, sample_virtual_service

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


def test_server_sample_is_what_the_operator_writes_under_a_generated_name() -> None:
    config = OperatorConfig(default_namespace="prod", developer_namespaces=("qa", "dev"))
    sample = sample_virtual_service(config)
    assert "name" not in sample["metadata"]
    assert sample["metadata"]["generateName"] == "sample-service-virtual-service-"
    assert sample["metadata"]["namespace"] == "prod"
    assert [r.get("name") for r in sample["spec"]["http"]] == ["dev-qa", "dev-dev", None]
    assert validate_virtual_service(sample) == []


@pytest.mark.parametrize(
    ("error", "refusal"),
    [
        (Invalid(422, "Invalid", "spec.hosts: Invalid value"), True),
        (ApiError(400, "BadRequest", 'strict decoding error: unknown field "spec.x"'), True),
        (Forbidden(403, "Forbidden", 'admission webhook "v" denied the request: no'), True),
        (Forbidden(403, "Forbidden", 'User "u" cannot create resource "virtualservices"'), False),
        (NotFound(404, "NotFound", 'namespaces "prod" not found'), False),
        (ServerError(0, "ConnectionError", "refused"), False),
    ],
)
def test_what_counts_as_the_servers_verdict(error: ApiError, refusal: bool) -> None:
    assert is_refusal(error) is refusal
