"""`check-config`: offline validation of config files, through `cli.main`."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtualservice_operator import cli
from virtualservice_operator_dev.controlplane import REPO_ROOT

BROKEN = """\
defaultNamespace: kube-system
developerNamespaces:
  - "Bad_NS"
  - staging
enablePlaceholderServices: "yes"
routing:
  match: cookie
"""


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check-config", str(REPO_ROOT / "deployments" / "config.yaml")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("config OK: defaultNamespace production;")
    assert "placeholders on" in out
    assert "\033[" not in out  # no colour when stdout is not a terminal


@pytest.mark.parametrize("name", ["staging-config.yaml", "production-config.yaml"])
def test_example_configs_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(REPO_ROOT / "deployments" / "examples" / name)]) == 0
    assert "config OK" in capsys.readouterr().out


def test_every_problem_listed_with_line_path_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["check-config", _write(tmp_path, BROKEN)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[0].endswith("4 problems")
    problems = lines[1:]
    assert len(problems) == 4
    assert problems[0].startswith(
        "  - line 1: defaultNamespace: 'kube-system' is a system namespace."
    )
    assert problems[1].startswith("  - line 3: developerNamespaces[0]: 'Bad_NS' is not a valid")
    assert problems[2].startswith("  - line 5: enablePlaceholderServices: must be true or false")
    assert problems[3].startswith("  - line 7: routing.match: is 'cookie'")
    assert all(". Fix: " in p for p in problems)


def test_config_map_manifest_and_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: virtualservice-operator-config, namespace: virtualservice-operator-system}
data:
  config.yaml: |
    defaultNamespace: prod
    developerNamespace: [dev]
"""
    code = cli.main(["check-config", _write(tmp_path, manifest)])
    out = capsys.readouterr().out
    assert code == 0
    assert "warning: config.yaml line 2: unknown key 'developerNamespace' ignored" in out
    assert "did you mean 'developerNamespaces'?" in out
    assert "config OK: defaultNamespace prod; developerNamespaces none; placeholders off" in out


def test_config_map_without_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {other: y}\n"
    assert cli.main(["check-config", _write(tmp_path, manifest)]) == 1
    assert (
        "data.config.yaml: is missing from the ConfigMap. Fix: add it." in capsys.readouterr().out
    )


def test_yaml_syntax_error_has_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "defaultNamespace: prod\ndeveloperNamespaces: [dev\nenable: true\n"
    assert cli.main(["check-config", _write(tmp_path, text)]) == 1
    out = capsys.readouterr().out
    assert "1 problem\n" in out
    assert "  - line 3: is not valid YAML" in out


def test_template_problem_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        "defaultNamespace: prod\n"
        "virtualServiceTemplate: |\n"
        "  apiVersion: networking.istio.io/v1\n"
        "  kind: VirtualService\n"
        '  metadata: {name: "${serviceName}-vs"}\n'
        '  spec: {hosts: ["${serviceName}"]}\n'
    )
    assert cli.main(["check-config", _write(tmp_path, text)]) == 1
    out = capsys.readouterr().out
    assert "line 2: virtualServiceTemplate: metadata.name: is 'sample-service-vs'" in out
    assert 'Fix: write name: "${serviceName}-virtual-service"' in out


def test_unreadable_file_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(tmp_path / "missing.yaml")]) == 3
    assert "error: cannot read" in capsys.readouterr().err


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("defaultNamespace: prod\n"))
    assert cli.main(["check-config", "-"]) == 0
    assert "config OK" in capsys.readouterr().out


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["check-config", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "  3  could not answer" in out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["check-config"])
    assert exc.value.code == 2
