"""Tests for the pprof endpoints' profile producers, checked by a tiny decoder and by Go's pprof."""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import shutil
import signal
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from virtualservice_operator.serving import pprof
from virtualservice_operator.serving.pprof import ProfileBusy, cpu_profile, heap_profile

# --------------------------------------------------------------------- test-side proto reader

Fields = dict[int, list[int | bytes]]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(buf: bytes) -> Fields:
    """Decode one message into {field number: [varint ints or length-delimited bytes]}."""
    out: Fields = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.setdefault(key >> 3, []).append(value)
    assert pos == len(buf)
    return out


def _int(fields: Fields, number: int) -> int:
    value = fields.get(number, [0])[0]
    assert isinstance(value, int)
    return value


def _msgs(fields: Fields, number: int) -> list[Fields]:
    return [_fields(v) for v in fields.get(number, []) if isinstance(v, bytes)]


def _packed(fields: Fields, number: int) -> list[int]:
    values: list[int] = []
    for chunk in fields.get(number, []):
        assert isinstance(chunk, bytes), "repeated scalars must be packed"
        pos = 0
        while pos < len(chunk):
            value, pos = _varint(chunk, pos)
            values.append(value)
    return values


@dataclass
class Decoded:
    strings: list[str]
    sample_types: list[tuple[str, str]]
    samples: list[tuple[list[int], list[int], dict[str, str]]]
    functions: dict[int, tuple[str, str, int]] = field(default_factory=dict)
    locations: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (function, line)
    period_type: tuple[str, str] | None = None
    period: int = 0
    time_nanos: int = 0

    def stack_names(self, location_ids: list[int]) -> list[str]:
        return [self.functions[self.locations[i][0]][0] for i in location_ids]


def decode(data: bytes) -> Decoded:
    top = _fields(gzip.decompress(data))
    strings = [s.decode() for s in top[6] if isinstance(s, bytes)]

    def value_type(vt: Fields) -> tuple[str, str]:
        return strings[_int(vt, 1)], strings[_int(vt, 2)]

    samples = [
        (
            _packed(s, 1),
            _packed(s, 2),
            {strings[_int(label, 1)]: strings[_int(label, 2)] for label in _msgs(s, 3)},
        )
        for s in _msgs(top, 2)
    ]
    decoded = Decoded(strings, [value_type(vt) for vt in _msgs(top, 1)], samples)
    for fn in _msgs(top, 5):
        assert _int(fn, 1) not in decoded.functions
        decoded.functions[_int(fn, 1)] = (strings[_int(fn, 2)], strings[_int(fn, 4)], _int(fn, 5))
    for loc in _msgs(top, 4):
        (line,) = _msgs(loc, 4)
        assert _int(loc, 1) not in decoded.locations
        decoded.locations[_int(loc, 1)] = (_int(line, 1), _int(line, 2))
    if 11 in top:
        (period_type,) = _msgs(top, 11)
        decoded.period_type = value_type(period_type)
    decoded.period = _int(top, 12)
    decoded.time_nanos = _int(top, 9)
    return decoded


def check_consistent(profile: Decoded) -> None:
    assert profile.strings[0] == ""
    assert 0 not in profile.functions and 0 not in profile.locations
    for function_id, _line in profile.locations.values():
        assert function_id in profile.functions
    for location_ids, values, _labels in profile.samples:
        assert location_ids, "every sample has a stack"
        assert all(i in profile.locations for i in location_ids)
        assert len(values) == len(profile.sample_types)


# ------------------------------------------------------------------------------ workloads


def busy_python_work(seconds: float) -> int:
    """Burn CPU in pure Python, so the sampler sees this function's frame."""
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        total += sum(i * i for i in range(500))
    return total


def allocate_lots_of_memory() -> list[bytes]:
    return [bytes(1000) + str(i).encode() for i in range(20_000)]  # about 20 MB


async def profile_while_busy(seconds: float = 0.6) -> bytes:
    """CPU profile while the event loop thread itself is blocked in busy_python_work."""
    task = asyncio.create_task(cpu_profile(seconds, interval=0.005))
    await asyncio.sleep(0)  # let the sampler thread start
    busy_python_work(seconds)
    return await task


@pytest.fixture
def heap_tracing() -> Iterator[None]:
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(pprof.HEAP_TRACEBACK_FRAMES)
    yield
    if not was_tracing:
        tracemalloc.stop()


# --------------------------------------------------------------------------- structure


async def test_cpu_profile_structure_and_leaf_first_stacks() -> None:
    profile = decode(await profile_while_busy())
    check_consistent(profile)
    assert profile.sample_types == [("samples", "count"), ("cpu", "nanoseconds")]
    assert profile.period_type == ("cpu", "nanoseconds")
    assert profile.period == 5_000_000
    assert profile.time_nanos > 0
    busy = [s for s in profile.samples if "busy_python_work" in profile.stack_names(s[0])]
    assert sum(values[0] for _, values, _ in busy) >= 20, "expected ~100 samples in 0.6 s"
    for location_ids, values, labels in busy:
        names = profile.stack_names(location_ids)
        assert labels == {"thread": "MainThread"}
        assert values[1] > 0
        # Leaf first: the busy function (or what it calls) comes before its caller.
        assert names.index("busy_python_work") < names.index("profile_while_busy")
    assert not any("pprof-cpu-sampler" in labels.values() for _, _, labels in profile.samples), (
        "the sampler must not sample itself"
    )
    functions = {name: (filename, start) for name, filename, start in profile.functions.values()}
    filename, start_line = functions["busy_python_work"]
    assert filename == __file__
    assert start_line == busy_python_work.__code__.co_firstlineno


def burn_between_system_calls(seconds: float) -> None:
    """Mostly pure Python CPU, with a system call (which lets go of the GIL) every ~0.5 ms."""
    read, write = os.pipe()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sum(i * i for i in range(2000))
            one_system_call(read, write)
    finally:
        os.close(read)
        os.close(write)


def one_system_call(read: int, write: int) -> None:
    os.write(write, b"x")
    os.read(read, 1)


async def test_cpu_profile_of_the_main_thread_is_not_drawn_to_system_calls() -> None:
    """A thread sampling another gets the GIL only when that one lets go of it, at a system
    call: its samples would all land in `one_system_call`, which uses a few percent of the
    CPU. The main thread is sampled by SIGPROF instead, where its CPU is."""
    task = asyncio.create_task(cpu_profile(1.0, interval=0.005))
    await asyncio.sleep(0)
    burn_between_system_calls(1.0)
    profile = decode(await task)
    check_consistent(profile)
    cpu = {"burn": 0, "syscall": 0}
    for location_ids, values, labels in profile.samples:
        names = profile.stack_names(location_ids)
        assert labels == {"thread": "MainThread"}
        if "one_system_call" in names:
            cpu["syscall"] += values[1]
        elif "burn_between_system_calls" in names:
            cpu["burn"] += values[1]
    assert cpu["burn"] > 0, cpu
    assert cpu["syscall"] < 0.3 * (cpu["burn"] + cpu["syscall"]), cpu


async def test_cpu_profile_leaves_no_timer_and_sigprof_harmless() -> None:
    await profile_while_busy(0.2)
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGPROF) in (signal.SIG_IGN, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPROF)  # a late signal: ignored, the process goes on


async def test_cpu_profile_uses_qualified_names_for_worker_threads() -> None:
    class Worker:
        def spin(self) -> None:
            busy_python_work(0.5)

    task = asyncio.create_task(cpu_profile(0.5, interval=0.005))
    await asyncio.sleep(0)
    await asyncio.to_thread(Worker().spin)
    profile = decode(await task)
    check_consistent(profile)
    names = {name for name, _, _ in profile.functions.values()}
    assert Worker.spin.__qualname__ in names  # "...<locals>.Worker.spin"


def test_heap_profile_structure(heap_tracing: None) -> None:
    kept = allocate_lots_of_memory()
    profile = decode(heap_profile())
    check_consistent(profile)
    assert profile.sample_types == [("inuse_objects", "count"), ("inuse_space", "bytes")]
    ours = [
        values
        for location_ids, values, _ in profile.samples
        # Leaf first: the list comprehension, named as CPython names its code object.
        if profile.stack_names(location_ids)[0] == "allocate_lots_of_memory.<locals>.<listcomp>"
        and profile.stack_names(location_ids)[1] == "allocate_lots_of_memory"
    ]
    assert sum(v[0] for v in ours) >= 20_000
    assert sum(v[1] for v in ours) >= 20_000_000
    assert len(kept) == 20_000


def test_heap_profile_without_tracing_is_valid_and_empty() -> None:
    assert not tracemalloc.is_tracing()
    profile = decode(heap_profile())
    assert not tracemalloc.is_tracing()
    check_consistent(profile)
    assert profile.samples == []
    assert profile.strings[0] == ""


async def test_heap_window_traces_only_while_it_lasts() -> None:
    assert not tracemalloc.is_tracing()
    kept: list[list[bytes]] = []

    async def allocate_during_window() -> None:
        await asyncio.sleep(0.05)
        kept.append(allocate_lots_of_memory())

    task = asyncio.create_task(allocate_during_window())
    profile = decode(await pprof.heap_profile_window(0.5))
    await task
    assert not tracemalloc.is_tracing(), "tracing must stop when the window ends"
    check_consistent(profile)
    ours = [
        values
        for location_ids, values, _ in profile.samples
        if "allocate_lots_of_memory" in profile.stack_names(location_ids)
    ]
    assert sum(v[1] for v in ours) >= 20_000_000


async def test_heap_window_one_at_a_time_and_stops_tracing_when_cancelled() -> None:
    first = asyncio.create_task(pprof.heap_profile_window(30))
    await asyncio.sleep(0)
    assert tracemalloc.is_tracing()
    with pytest.raises(pprof.ProfileBusy):
        await pprof.heap_profile_window(1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not tracemalloc.is_tracing()


@pytest.mark.parametrize("seconds", [0, -1, pprof.MAX_CPU_PROFILE_SECONDS + 1])
async def test_heap_window_refuses_bad_seconds(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds must be in"):
        await pprof.heap_profile_window(seconds)
    assert not tracemalloc.is_tracing()


async def test_heap_window_zero_when_already_tracing(heap_tracing: None) -> None:
    kept = allocate_lots_of_memory()
    profile = decode(await pprof.heap_profile_window(0))
    assert tracemalloc.is_tracing(), "tracing started elsewhere is left on"
    assert profile.samples
    assert len(kept) == 20_000


# ------------------------------------------------------------------------ errors, busy


@pytest.mark.parametrize("seconds", [0, -1, 300.5, math.nan, math.inf])
async def test_bad_seconds_rejected(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        await cpu_profile(seconds)


@pytest.mark.parametrize("interval", [0, -0.01, 0.0001, 2.0])
async def test_bad_interval_rejected(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        await cpu_profile(1, interval=interval)


async def test_concurrent_cpu_profile_is_busy_then_free_again() -> None:
    first = asyncio.create_task(cpu_profile(0.3))
    await asyncio.sleep(0)
    with pytest.raises(ProfileBusy):
        await cpu_profile(0.3)
    decode(await first)
    decode(await cpu_profile(0.05))  # the lock was released


async def test_cancel_stops_sampler_and_frees_the_lock() -> None:
    task = asyncio.create_task(cpu_profile(30))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    while True:
        try:
            decode(await cpu_profile(0.05))
            break
        except ProfileBusy:
            assert time.monotonic() - started < 2, "sampler did not stop after cancel"
            await asyncio.sleep(0.01)
    while any(t.name == "pprof-cpu-sampler" for t in threading.enumerate()):
        assert time.monotonic() - started < 2, "sampler thread still alive"
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------- go tool pprof


def go_pprof(tmp_path: Path, data: bytes, *args: str) -> str:
    go = shutil.which("go")
    if go is None:
        pytest.skip("`go` is not on PATH; cannot check the profile with `go tool pprof`")
    path = tmp_path / "profile.pb.gz"
    path.write_bytes(data)
    env = {
        **os.environ,
        "HOME": os.environ.get("HOME") or str(tmp_path),
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",  # never download a toolchain
        "GOPROXY": "off",
    }
    result = subprocess.run(
        [go, "tool", "pprof", *args, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,  # the first run may build cmd/pprof into the Go build cache
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_go_tool_pprof_reads_cpu_profile(tmp_path: Path) -> None:
    data = await profile_while_busy()
    top = go_pprof(tmp_path, data, "-top")
    assert "busy_python_work" in top, top
    assert "Type: cpu" in top, top
    traces = go_pprof(tmp_path, data, "-traces")
    assert "thread:MainThread" in traces.replace(" ", ""), traces


def test_go_tool_pprof_reads_heap_profile(tmp_path: Path, heap_tracing: None) -> None:
    kept = allocate_lots_of_memory()
    data = heap_profile()
    top = go_pprof(tmp_path, data, "-top")
    assert "allocate_lots_of_memory" in top, top
    assert "Type: inuse_space" in top, top
    objects = go_pprof(tmp_path, data, "-top", "-sample_index=inuse_objects")
    assert "allocate_lots_of_memory" in objects, objects
    assert len(kept) == 20_000
