"""Our kubeconfig loader against client-go's own reading of the same situation.

`kubeconfig-resolve` (hack/controlplane/kube/kubeconfig-resolve, built from client-go
v0.35.4 by hack/build-controlplane.sh) prints what client-go resolves; for every
situation in kubeconfig_corpus.yaml our `ClusterAccess.describe()` must print the same,
or, where client-go refuses, we refuse too; where the situation names a field we do not
support (`unsupported:`), we refuse with `KubeconfigUnsupported` naming it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml

from virtualservice_operator.kube.kubeconfig import (
    ClusterAccess,
    KubeconfigError,
    KubeconfigUnsupported,
)
from virtualservice_operator_dev.controlplane import default_bin_dir
from virtualservice_operator_dev.pki import write_pki

CORPUS = Path(__file__).with_name("kubeconfig_corpus.yaml")
SITUATIONS: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text())
BIN = default_bin_dir()  # where hack/build-controlplane.sh links it


@pytest.fixture(scope="module")
def resolver() -> Path:
    found = BIN / "kubeconfig-resolve"
    if not found.exists():
        which = shutil.which("kubeconfig-resolve")
        if which is None:
            if os.environ.get("CI"):
                pytest.fail(f"{found} is missing: run hack/build-controlplane.sh")
            pytest.skip(f"{found} is missing: run hack/build-controlplane.sh (make controlplane)")
        found = Path(which)
    return found


@pytest.fixture(scope="module")
def pki_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    pki = write_pki(tmp_path_factory.mktemp("pki"))
    return {
        "ca.crt": pki.ca_cert.read_bytes(),
        "client.crt": pki.admin_cert.read_bytes(),
        "client.key": pki.admin_key.read_bytes(),
    }


def _substitute(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return Template(value).safe_substitute(names)
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    return value


def _lay_out(
    situation: dict[str, Any], root: Path, pki: dict[str, bytes]
) -> tuple[dict[str, str], Path]:
    """The situation's files under `root`; its environment and ServiceAccount folder."""
    for name, content in pki.items():
        (root / name).write_bytes(content)
    names = {
        "dir": str(root),
        "ca_pem": pki["ca.crt"].decode(),
        "ca_b64": base64.b64encode(pki["ca.crt"]).decode(),
        "cert_b64": base64.b64encode(pki["client.crt"]).decode(),
        "key_b64": base64.b64encode(pki["client.key"]).decode(),
    }
    for name, content in (situation.get("files") or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _substitute(content, names)
        path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    account = root / "serviceaccount"
    account.mkdir()
    parts = situation.get("service_account") or {}
    if "token" in parts:
        (account / "token").write_text(parts["token"])
    if parts.get("ca"):
        (account / "ca.crt").write_bytes(pki["ca.crt"])
    if parts.get("namespace"):
        (account / "namespace").write_text("ops")
    env = {"HOME": str(root / "home"), **_substitute(situation.get("env") or {}, names)}
    return env, account


def _client_go(
    resolver: Path, situation: dict[str, Any], root: Path, env: dict[str, str], account: Path
) -> dict[str, Any]:
    args = [str(resolver), "-service-account", str(account)]
    if situation.get("kubeconfig"):
        args += ["-kubeconfig", situation["kubeconfig"]]
    if situation.get("context"):
        args += ["-context", situation["context"]]
    done = subprocess.run(
        args, cwd=root, env=env, capture_output=True, text=True, timeout=30, check=True
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _ours(
    situation: dict[str, Any], root: Path, env: dict[str, str], account: Path
) -> dict[str, Any]:
    path = situation.get("kubeconfig")
    access = ClusterAccess.from_kubeconfig(
        str(root / path) if path else None,
        situation.get("context"),
        service_account=account,
        environ=env,
    )
    return access.describe()


def _normal(answer: dict[str, Any]) -> dict[str, Any]:
    """Go's empty lists and maps print as null; ours may be empty: one spelling."""

    def empty_is_none(value: Any) -> Any:
        return value or None

    answer = dict(answer)
    if answer.get("exec"):
        plugin = dict(answer["exec"])
        plugin["args"] = empty_is_none(plugin["args"])
        plugin["env"] = empty_is_none(plugin["env"])
        answer["exec"] = plugin
    if answer.get("impersonate"):
        who = dict(answer["impersonate"])
        who["groups"] = empty_is_none(who["groups"])
        who["extra"] = empty_is_none(who["extra"])
        answer["impersonate"] = who
    return answer


def test_the_corpus_is_large_and_names_are_unique() -> None:
    names = [s["name"] for s in SITUATIONS]
    assert len(names) >= 40
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("situation", SITUATIONS, ids=[s["name"] for s in SITUATIONS])
def test_same_answer_as_client_go(
    situation: dict[str, Any], resolver: Path, pki_files: dict[str, bytes], tmp_path: Path
) -> None:
    root = tmp_path.resolve()
    env, account = _lay_out(situation, root, pki_files)
    expected = _client_go(resolver, situation, root, env, account)
    unsupported = situation.get("unsupported")
    if unsupported:
        assert "error" not in expected, f"client-go refuses it too: {expected['error']}"
        with pytest.raises(KubeconfigUnsupported) as refused:
            _ours(situation, root, env, account)
        assert refused.value.field == unsupported
        assert unsupported in str(refused.value)
        return
    if "error" in expected:
        with pytest.raises(KubeconfigError) as refused:
            _ours(situation, root, env, account)
        assert not isinstance(refused.value, KubeconfigUnsupported), "a plain error, not ours"
        return
    assert _normal(_ours(situation, root, env, account)) == _normal(expected)
