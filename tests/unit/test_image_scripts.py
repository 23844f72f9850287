"""hack/image/common.sh's `buildah_build`: the build is tried again only when buildah's
sealed copy of itself was refused (EBUSY), never on any other failure, and at most 3 times.

A stand-in for buildah fails the way the real one does, for a given number of calls.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEAL_REFUSED = "Close_Fd sealing memfd copy: Device or resource busy"


def _build(tmp_path: Path, failures: int, message: str) -> tuple[int, int, str]:
    """Runs buildah_build with a stand-in failing `failures` times with `message`;
    returns (exit code, calls made, what it printed on stderr)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "buildah"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo x >> "{calls}"\n'
        f'if (( $(wc -l < "{calls}") <= {failures} )); then\n'
        f'  echo "{message}" >&2\n'
        '  echo "Error: building at STEP \\"RUN true\\": exit status 1" >&2\n'
        "  exit 125\n"
        "fi\n"
        'echo "built: $*" >&2\n'
    )
    fake.chmod(0o755)
    script = (
        f'source "{ROOT}/hack/image/common.sh"\n'
        f'buildah_cmd=("{fake}")\n'
        "buildah_build --quiet --tag t .\n"
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    made = len(calls.read_text().splitlines()) if calls.exists() else 0
    return done.returncode, made, done.stderr


def test_a_build_that_passes_runs_once(tmp_path: Path) -> None:
    code, calls, err = _build(tmp_path, 0, SEAL_REFUSED)
    assert (code, calls) == (0, 1)
    assert "built: build --quiet --tag t ." in err


def test_a_refused_seal_is_built_again_and_said(tmp_path: Path) -> None:
    code, calls, err = _build(tmp_path, 2, SEAL_REFUSED)
    assert (code, calls) == (0, 3)
    assert err.count(SEAL_REFUSED) == 2
    assert "building again, try 2 of 3" in err and "try 3 of 3" in err


def test_a_refused_seal_three_times_fails_with_buildah_s_code(tmp_path: Path) -> None:
    code, calls, err = _build(tmp_path, 5, SEAL_REFUSED)
    assert (code, calls) == (125, 3)
    assert err.count(SEAL_REFUSED) == 3


@pytest.mark.parametrize(
    "message",
    ["E: Unable to locate package curl", "sealing memfd copy: Operation not permitted"],
)
def test_any_other_failure_is_not_tried_again(tmp_path: Path, message: str) -> None:
    code, calls, err = _build(tmp_path, 1, message)
    assert (code, calls) == (125, 1)
    assert message in err and "building again" not in err
