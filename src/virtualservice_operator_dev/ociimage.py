"""A one-layer OCI image archive from a few files, for containerd's `ctr images import`.

The node has no registry, so the images it needs before any Pod runs (the pause image,
metrics-server) are static binaries packed here. The archive is an OCI image layout
(oci-layout, index.json, blobs/sha256/...) whose index names the image with the
annotation `ctr images import` reads (`io.containerd.image.name`).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageFile:
    source: Path
    target: str  # path inside the image, e.g. "pause"
    mode: int = 0o755


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def _layer(files: list[ImageFile]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for f in files:
            # The file itself, not a symlink to it (bin/kubectl points into the cache).
            info = layer.gettarinfo(str(f.source.resolve()), arcname=f.target.lstrip("/"))
            info.mode, info.uid, info.gid, info.uname, info.gname = f.mode, 0, 0, "", ""
            info.mtime = 0  # the same files give the same digest
            with f.source.open("rb") as src:
                layer.addfile(info, src)
    return buf.getvalue()


def write_image(
    archive: Path,
    name: str,
    files: list[ImageFile],
    entrypoint: list[str],
    user: str = "65532:65532",
) -> str:
    """Write `name` (a full reference, e.g. registry.k8s.io/pause:3.10.1) to `archive`.

    Returns the manifest digest.
    """
    layer = _layer(files)
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w") as tar:
        layer_digest = _blob(tar, layer)
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = _blob(tar, config_bytes)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            },
            sort_keys=True,
        ).encode()
        manifest_digest = _blob(tar, manifest)
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
        for member, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return manifest_digest
