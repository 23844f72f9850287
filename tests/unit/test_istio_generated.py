"""The committed Istio files are exactly what the pinned istio.io/api module generates."""

from __future__ import annotations

import pytest
import yaml

from virtualservice_operator_dev import istio


def test_committed_files_equal_the_modules() -> None:
    # Fails after a version bump in hack/istio/go.mod until the files are regenerated
    # (`python -m virtualservice_operator_dev.istio`), and after any hand edit.
    for path, content in istio.generated().items():
        assert path.read_text() == content, f"{path} is stale: regenerate it"


def test_crd_is_istios_document_verbatim() -> None:
    all_crds = istio.crds_file().read_text()
    committed = istio.CRD_FILE.read_text()
    document = istio.crd_text(all_crds, istio.VIRTUAL_SERVICE_CRD)
    assert committed.endswith(document)
    assert all(line.startswith("#") for line in committed[: -len(document)].splitlines())
    crd = yaml.load(committed, Loader=yaml.CSafeLoader)
    assert crd["metadata"]["name"] == istio.VIRTUAL_SERVICE_CRD
    served = {v["name"] for v in crd["spec"]["versions"] if v["served"]}
    assert {"v1", "v1beta1", "v1alpha3"} <= served


def test_crd_text_finds_each_document_and_refuses_unknown_names() -> None:
    text = "# banner\napiVersion: v1\nmetadata: {name: a}\n---\nmetadata:\n  name: b\n"
    assert istio.crd_text(text, "a") == "apiVersion: v1\nmetadata: {name: a}\n"
    assert istio.crd_text(text, "b") == "metadata:\n  name: b\n"
    with pytest.raises(LookupError, match="CRD c is not"):
        istio.crd_text(text, "c")
