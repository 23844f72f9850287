"""The operator's event loop: uvloop's, asyncio's where uvloop cannot be imported."""

from __future__ import annotations

import asyncio
import sys

import pytest

from virtualservice_operator.runtime import eventloop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_the_operator_runs_on_uvloop() -> None:
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_without_uvloop_asyncio_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert eventloop.run(_loop_module()).startswith("asyncio")
