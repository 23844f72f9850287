"""`explain` and `status` when the cluster cannot answer: exit 3 and one clear line."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import prometheus_client
import pytest
import structlog
import yaml

from virtualservice_operator import cli
from virtualservice_operator.commands.output import Style, table
from virtualservice_operator.runtime import logs
from virtualservice_operator_dev.controlplane import free_port


def test_missing_kubeconfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--kubeconfig", str(tmp_path / "nope")]) == 3
    err = capsys.readouterr().err
    assert "error: cannot load kubeconfig: KubeconfigError" in err
    assert "give an existing, readable file" in err, "the fix is named"


def test_run_with_a_missing_kubeconfig_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `run` configures process-wide logging and metrics: keep that within this test.
    out = io.StringIO()
    configure = logs.configure
    monkeypatch.setattr(logs, "configure", lambda level, dev: configure(level, dev, stream=out))
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)
    monkeypatch.setattr(prometheus_client, "disable_created_metrics", lambda: None)
    try:
        assert cli.main(["run", "--kubeconfig", str(tmp_path / "nope")]) == 1
    finally:
        structlog.reset_defaults()
    assert "cannot start: cannot read kubeconfig" in out.getvalue(), out.getvalue()


def test_unreachable_api_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    assert cli.main(["explain", "cart", "--kubeconfig", str(path)]) == 3
    assert "error: the API server refused a read: 0 ConnectionError" in capsys.readouterr().err


def test_explain_rejects_a_bad_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["explain", "Not/A/Name"]) == 2
    assert "is not a Service name" in capsys.readouterr().err


def test_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert Style(Tty()).ok("in sync") == "\033[32min sync\033[0m"
    assert Style(io.StringIO()).ok("in sync") == "in sync"
    monkeypatch.setenv("NO_COLOR", "1")
    assert Style(Tty()).ok("in sync") == "in sync"


def test_table_keeps_columns_aligned_when_the_last_cell_is_coloured() -> None:
    lines = table(["A", "SYNC"], [["long-name", "in sync"], ["b", "drift"]], last=str.upper)
    assert lines == ["A          SYNC", "long-name  IN SYNC", "b          DRIFT"]


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["explain", "cart"],
        ["check-config", "--server", "-"],
    ],
)
def test_every_cluster_command_takes_context_beside_kubeconfig(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    """kubectl's --context: the kubeconfig's current-context is replaced by it."""
    kubeconfig = {
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setattr("sys.stdin", io.StringIO("defaultNamespace: prod\n"))
    code = cli.main([*command, "--kubeconfig", str(path), "--context", "ghost"])
    err = capsys.readouterr().err
    assert code != 0
    assert "--context: context 'ghost' is not defined" in err, err


def test_run_takes_context_beside_kubeconfig() -> None:
    parsed = cli.build_parser().parse_args(["run", "--kubeconfig", "k", "--context", "prod"])
    assert (parsed.kubeconfig, parsed.context) == ("k", "prod")
