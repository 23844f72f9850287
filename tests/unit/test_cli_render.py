"""`render`: offline rendering of what the operator makes for one name, via `cli.main`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtualservice_operator import cli
from virtualservice_operator_dev.controlplane import REPO_ROOT

CONFIG_MAP = str(REPO_ROOT / "deployments" / "config.yaml")  # production; staging, dev-team-a, -b
PLAIN = "defaultNamespace: prod\ndeveloperNamespaces: [dev-a, dev-b]\n"


def _render(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[Any], str]:
    code = cli.main(["render", *args])
    captured = capsys.readouterr()
    docs = [d for d in yaml.safe_load_all(captured.out) if d is not None]
    return code, docs, captured.err


def _plain(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(PLAIN)
    return str(path)


def test_virtual_service_and_placeholders_from_config_map(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, docs, err = _render(capsys, "--config", CONFIG_MAP, "--service", "cart")
    assert code == 0
    vs, *placeholders = docs
    assert vs["kind"] == "VirtualService"
    assert vs["metadata"]["name"] == "cart-virtual-service"
    assert vs["metadata"]["namespace"] == "production"
    assert vs["metadata"]["labels"]["managed-by"] == "virtualservice-operator"
    assert vs["spec"]["http"] == [
        {"route": [{"destination": {"host": "cart.production.svc.cluster.local"}}]}
    ]
    assert [p["metadata"]["namespace"] for p in placeholders] == [
        "staging",
        "dev-team-a",
        "dev-team-b",
    ]
    assert all(
        p["spec"]["externalName"] == "cart.production.svc.cluster.local" for p in placeholders
    )
    assert "# staging: placeholder pointing to production" in err


def test_dev_namespace_gets_a_route_and_no_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    code, docs, _ = _render(
        capsys, "--config", CONFIG_MAP, "--service", "cart", "--dev-namespace", "dev-team-b"
    )
    assert code == 0
    vs, *placeholders = docs
    first = vs["spec"]["http"][0]
    assert first["name"] == "dev-dev-team-b"
    assert first["match"] == [{"headers": {"x-developer": {"exact": "dev-team-b"}}}]
    assert first["route"] == [{"destination": {"host": "cart.dev-team-b.svc.cluster.local"}}]
    assert [p["metadata"]["namespace"] for p in placeholders] == ["staging", "dev-team-a"]


def test_multi_port_routes_and_json_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = cli.main(
        [
            "render",
            "--config",
            _plain(tmp_path),
            "--service",
            "api",
            "--dev-namespace",
            "dev-b",
            "--ports",
            "80,grpc:9090,tcp-db:5432",
            "-o",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["kind"] == "List"
    (vs,) = out["items"]  # placeholders are off in this config
    names = [r.get("name") for r in vs["spec"]["http"]]
    # No route for the TCP port; the template's route once per HTTP port (IST0112).
    assert names == ["dev-dev-b-80", "dev-dev-b-9090", None, None]
    assert [r["match"] for r in vs["spec"]["http"][2:]] == [[{"port": 80}], [{"port": 9090}]]
    assert vs["spec"]["http"][1]["route"][0]["destination"]["port"] == {"number": 9090}


def test_placeholders_flag_turns_them_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, docs, _ = _render(capsys, "--config", _plain(tmp_path), "--service", "api")
    assert code == 0 and len(docs) == 1
    code, docs, _ = _render(
        capsys, "--config", _plain(tmp_path), "--service", "api", "--placeholders"
    )
    assert code == 0
    assert [d["metadata"]["namespace"] for d in docs[1:]] == ["dev-a", "dev-b"]


def test_unknown_dev_namespace_is_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, docs, err = _render(
        capsys, "--config", _plain(tmp_path), "--service", "api", "--dev-namespace", "other"
    )
    assert code == 0
    assert "warning: other is not in developerNamespaces (dev-a, dev-b): ignored" in err
    assert len(docs[0]["spec"]["http"]) == 1


def test_kubernetes_service_renders_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, docs, err = _render(capsys, "--config", _plain(tmp_path), "--service", "kubernetes")
    assert code == 0 and docs == []
    assert "API server's own Service" in err


def test_invalid_config_lists_problems(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("defaultNamespace: Prod\nenablePlaceholderServices: 1\n")
    code, docs, err = _render(capsys, "--config", str(path), "--service", "api")
    assert code == 1 and docs == []
    assert "line 1: defaultNamespace: 'Prod' is not a valid namespace name" in err
    assert "line 2: enablePlaceholderServices: must be true or false" in err


def test_bad_service_name_and_bad_ports(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _render(capsys, "--config", _plain(tmp_path), "--service", "Not_A_Name")
    assert code == 1
    assert "is not a Service name" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["render", "--config", _plain(tmp_path), "--service", "a", "--ports", "http"])
    assert exc.value.code == 2
    assert "is not a port" in capsys.readouterr().err


def test_missing_file_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["render", "--config", str(tmp_path / "nope"), "--service", "a"]) == 3
    assert "cannot read" in capsys.readouterr().err


def test_as_a_process_every_line_is_written_and_the_exit_code_kept(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console script ends a command's process without tearing its heap down
    (`cli.entry`): what it printed must still all be there, to a pipe or a file, and
    its exit code and errors too."""
    import subprocess
    import sys

    args = ["render", "--config", CONFIG_MAP, "--service", "cart", "-o", "json"]
    assert cli.main(args) == 0
    expected, notes = capsys.readouterr()
    command = [sys.executable, "-m", "virtualservice_operator.cli"]
    # Buffered, as a user's shell runs it: nothing reaches the pipe before a flush.
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    piped = subprocess.run(
        [*command, *args], check=False, capture_output=True, text=True, timeout=60
    )
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, expected, notes)
    with (tmp_path / "out.json").open("w") as out:
        written = subprocess.run([*command, *args], check=False, stdout=out, timeout=60)
    assert written.returncode == 0
    assert (tmp_path / "out.json").read_text() == expected
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaultNamespace: Prod\n")
    failed = subprocess.run(
        [*command, "render", "--config", str(bad), "--service", "a"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1 and failed.stdout == ""
    assert "'Prod' is not a valid namespace name" in failed.stderr
