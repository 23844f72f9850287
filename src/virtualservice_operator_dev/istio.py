"""Istio's generated CRDs, from the `istio.io/api` Go module pinned in hack/istio/go.mod.

`hack/istio-crds.sh` copies `kubernetes/customresourcedefinitions.gen.yaml` out of the Go
module cache into `.cache/` (a step of `hack/build-controlplane.sh`). From that file:
- the local control plane installs the VirtualService CRD (`write_crds`);
- two committed files are generated, and a test keeps them equal to it:
  `deployments/crd/virtualservices.networking.istio.io.yaml` (the CRD, verbatim) and the
  operator's offline schema, package data `virtualservice_operator/domain/schemas/...json`.

Command line: `python -m virtualservice_operator_dev.istio [--check]` writes (or, with
`--check`, compares) the generated files; run it after changing the pinned version.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from virtualservice_operator.domain.schema import SCHEMA_FILE
from virtualservice_operator_dev.gotools import REPO_ROOT, module_version

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
GO_MOD = REPO_ROOT / "hack" / "istio" / "go.mod"
MODULE = "istio.io/api"
MODULE_FILE = "kubernetes/customresourcedefinitions.gen.yaml"
VIRTUAL_SERVICE_CRD = "virtualservices.networking.istio.io"
CRD_FILE = REPO_ROOT / "deployments" / "crd" / f"{VIRTUAL_SERVICE_CRD}.yaml"
SCHEMA_PATH = REPO_ROOT / "src" / "virtualservice_operator" / "domain" / SCHEMA_FILE


def istio_api_version() -> str:
    """The istio.io/api version that hack/istio/go.mod requires."""
    return module_version(MODULE, (GO_MOD,))


def crds_file() -> Path:
    """Istio's generated CRD file, copied out of the module cache on first use."""
    cache = Path(os.environ.get("VSO_CACHE_DIR", REPO_ROOT / ".cache"))
    path = cache / "istio-crds.gen.yaml"
    if not path.exists():
        script = REPO_ROOT / "hack" / "istio-crds.sh"
        out = subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True)
        path = Path(out.stdout.strip())
    return path


def crd_text(all_crds: str, name: str) -> str:
    """The YAML document of CRD `name`, exactly as it appears in Istio's file."""
    for document in all_crds.split("\n---\n"):
        lines = document.splitlines()
        # The generator's own banner comment opens the file, not a CRD: drop it.
        while lines and lines[0].startswith("#"):
            lines.pop(0)
        text = "\n".join(lines).strip("\n") + "\n"
        # Only the head (apiVersion, kind, metadata) is parsed: the schemas are large.
        head = yaml.load(text.split("\nspec:", 1)[0], Loader=_Loader)
        if isinstance(head, dict) and (head.get("metadata") or {}).get("name") == name:
            return text
    raise LookupError(f"CRD {name} is not in Istio's generated CRDs")


def write_crds(directory: Path, names: tuple[str, ...] = (VIRTUAL_SERVICE_CRD,)) -> Path:
    """Write Istio's CRDs `names` into `directory` (one file each); return the directory."""
    text = crds_file().read_text()
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / f"{name}.yaml").write_text(crd_text(text, name))
    return directory


def crd_manifest(all_crds: str, version: str) -> str:
    """deployments/crd's file: a header saying where it comes from, then Istio's CRD."""
    header = (
        f"# Istio's VirtualService CRD, generated from {MODULE} {version} ({MODULE_FILE})\n"
        "# by `python -m virtualservice_operator_dev.istio`; do not edit. Only for a cluster\n"
        "# WITHOUT Istio (Istio installs this CRD itself, in the version it serves).\n"
    )
    return header + crd_text(all_crds, VIRTUAL_SERVICE_CRD)


def schema_document(all_crds: str, version: str) -> str:
    """The package-data schema: the CRD's openAPIV3Schema without descriptions."""
    crd = yaml.load(crd_text(all_crds, VIRTUAL_SERVICE_CRD), Loader=_Loader)
    versions = crd["spec"]["versions"]
    schemas = {v["name"]: _strip_descriptions(v["schema"]["openAPIV3Schema"]) for v in versions}
    first = next(iter(schemas.values()))
    if any(s != first for s in schemas.values()):
        # Every Istio release so far serves one schema under all versions; a release that
        # does not needs a schema per version here.
        raise RuntimeError(f"{VIRTUAL_SERVICE_CRD}: versions have different schemas")
    document = {
        "source": f"{MODULE} {version} {MODULE_FILE}",
        "crd": VIRTUAL_SERVICE_CRD,
        "served": sorted(v["name"] for v in versions if v.get("served")),
        "storage": next(v["name"] for v in versions if v.get("storage")),
        "openAPIV3Schema": first,
    }
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def _strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def generated() -> dict[Path, str]:
    """Every generated file and the content it must have."""
    all_crds = crds_file().read_text()
    version = istio_api_version()
    return {
        CRD_FILE: crd_manifest(all_crds, version),
        SCHEMA_PATH: schema_document(all_crds, version),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virtualservice_operator_dev.istio")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    stale = []
    for path, content in generated().items():
        current = path.read_text() if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for path in stale:
        verb = "differs from" if args.check else "written from"
        print(f"{path.relative_to(REPO_ROOT)} {verb} {MODULE} {istio_api_version()}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
