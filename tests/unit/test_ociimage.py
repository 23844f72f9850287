"""The OCI archive the node imports its own images from (pause, metrics-server)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from virtualservice_operator_dev.ociimage import ImageFile, write_image


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_layout_is_complete_and_every_blob_matches_its_digest(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    link = tmp_path / "link"
    link.symlink_to(binary)
    digest = write_image(
        tmp_path / "img.tar", "registry.k8s.io/pause:3.10.1", [ImageFile(link, "pause")], ["/pause"]
    )
    files = _members(tmp_path / "img.tar")
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert name.split("/")[-1] == hashlib.sha256(data).hexdigest()
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"]["io.containerd.image.name"] == "registry.k8s.io/pause:3.10.1"
    manifest = json.loads(files[f"blobs/sha256/{digest.split(':')[1]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"] == {"Entrypoint": ["/pause"], "User": "65532:65532"}
    layer = files[f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        (member,) = tar.getmembers()
        # The file the symlink points to, executable, owned by root.
        assert (member.name, member.isfile(), member.mode, member.uid) == ("pause", True, 0o755, 0)
        assert tar.extractfile(member).read() == b"\x7fELF not really"  # type: ignore[union-attr]


def test_same_files_same_digest(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"x" * 100)
    first = write_image(tmp_path / "a.tar", "local/x:1", [ImageFile(binary, "x")], ["/x"])
    binary.touch()  # a new mtime only
    assert write_image(tmp_path / "b.tar", "local/x:1", [ImageFile(binary, "x")], ["/x"]) == first
