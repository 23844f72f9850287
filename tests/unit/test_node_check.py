"""Whether this machine can run a node, and the one line saying why not."""

from __future__ import annotations

import pytest

from virtualservice_operator_dev import node


def test_not_root_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.sys, "platform", "linux")
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    assert node.unavailable_reason() == (
        "a node needs root (containerd, mounts, network interfaces, iptables)"
    )


def test_check_command_prints_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(node, "unavailable_reason", lambda: "a node needs root (...)")
    assert node.main(["check"]) == 1
    assert capsys.readouterr().out.strip() == "a node needs root (...)"
    monkeypatch.setattr(node, "unavailable_reason", lambda: None)
    assert node.main(["check"]) == 0
