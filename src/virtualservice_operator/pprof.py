"""CPU and heap profiles of this Python process in Go's pprof format.

The operations guide promises ``curl :8080/debug/pprof/profile?seconds=30 > cpu.prof`` followed
by ``go tool pprof cpu.prof``, so both profiles are gzip-compressed ``perftools.profiles.Profile``
protobuf messages (https://github.com/google/pprof/blob/main/proto/profile.proto), written by the
small hand-rolled encoder below rather than through a protobuf dependency.

CPU (:func:`cpu_profile`): a dedicated daemon thread wakes every ``interval`` and snapshots the
stacks of all other threads with :func:`sys._current_frames`. Sampling from its own thread is what
makes the event loop's stack visible while a coroutine hogs the loop; the awaiting coroutine only
waits on a future. On Linux each sample's ``cpu`` value is the CPU time that thread really used
since the previous tick, read from the kernel's per-thread CPU clock (the clock id glibc's
``pthread_getcpuclockid`` builds from the TID, here built from ``Thread.native_id``, which is safe
for threads that have already exited), so idle threads, e.g. a loop parked in ``epoll``, leave no
samples. Elsewhere, or for threads unknown to :mod:`threading`, every thread counts one
``interval`` per tick (wall-clock sampling). Each sample carries a ``thread`` label (``-tags``).
Only one CPU profile may run at a time; another request gets :class:`ProfileBusy`.

Heap (:func:`heap_profile`): live allocations from :mod:`tracemalloc`, one sample per distinct
traceback. tracemalloc must already trace when the objects are allocated, so the first call
starts it and earlier allocations stay invisible; call :func:`start_heap_tracing` at start-up
(behind a flag) to see everything. Tracing is not free: every allocation gets slower (often by
around 2x or more) and each traced block keeps its traceback, so memory use grows markedly.
tracemalloc frames only name a file and line, so function names come from parsing the source.
:func:`heap_profile` blocks for as long as the snapshot takes; call it via ``asyncio.to_thread``.

pprof wants stacks leaf-first: ``location_id[0]`` is the frame that was running, the last entry
is the root. Walking ``frame.f_back`` already gives that order; tracemalloc tracebacks run oldest
first and are reversed. Both profiles share :class:`_ProfileBuilder`, which interns strings,
functions and locations, merges identical stacks and encodes the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterable, Sequence
from types import CodeType, FrameType, FunctionType

__all__ = [
    "DEFAULT_CPU_PROFILE_SECONDS",
    "MAX_CPU_PROFILE_SECONDS",
    "ProfileBusy",
    "cpu_profile",
    "heap_profile",
    "start_heap_tracing",
]

DEFAULT_CPU_PROFILE_SECONDS = 30.0
MAX_CPU_PROFILE_SECONDS = 300.0
_MIN_INTERVAL = 0.001
_MAX_STACK_DEPTH = 256
_LINUX = sys.platform.startswith("linux")
_cpu_lock = threading.Lock()


class ProfileBusy(RuntimeError):
    """Another CPU profile is already being taken."""


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    value &= 0xFFFFFFFFFFFFFFFF  # int64 values travel as their 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def _uint(field: int, value: int) -> bytes:
    """A varint field; zero is the proto3 default and is left out."""
    return _varint(field << 3) + _varint(value) if value else b""


def _len(field: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, embedded message, packed repeated)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _packed(field: int, values: Iterable[int]) -> bytes:
    return _len(field, b"".join(_varint(v) for v in values))


class _ProfileBuilder:
    """Interns strings, functions and locations, then encodes and gzips the Profile."""

    def __init__(
        self,
        sample_types: Sequence[tuple[str, str]],
        period_type: tuple[str, str] | None = None,
        period: int = 0,
    ) -> None:
        self._strings: dict[str, int] = {"": 0}
        self._functions: dict[tuple[str, str, int], int] = {}
        self._locations: dict[tuple[int, int], int] = {}
        self._samples: dict[tuple[tuple[int, ...], tuple[tuple[int, int], ...]], list[int]] = {}
        self._sample_types = [self._value_type(t) for t in sample_types]
        self._period_type = self._value_type(period_type) if period_type else b""
        self._period = period

    def string(self, text: str) -> int:
        return self._strings.setdefault(text, len(self._strings))

    def _value_type(self, value_type: tuple[str, str]) -> bytes:
        return _uint(1, self.string(value_type[0])) + _uint(2, self.string(value_type[1]))

    def location(self, name: str, filename: str, start_line: int, line: int) -> int:
        """Id of the location for ``line`` inside function ``name``, created on first use."""
        function_id = self._functions.setdefault(
            (name, filename, start_line), len(self._functions) + 1
        )
        return self._locations.setdefault((function_id, line), len(self._locations) + 1)

    def add_sample(
        self,
        location_ids: Sequence[int],
        values: Sequence[int],
        labels: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Add ``values`` for a leaf-first stack; identical stacks and labels are summed."""
        label_ids = tuple((self.string(k), self.string(v)) for k, v in labels)
        totals = self._samples.setdefault((tuple(location_ids), label_ids), [0] * len(values))
        for i, value in enumerate(values):
            totals[i] += value

    def build(self, *, time_nanos: int, duration_nanos: int = 0) -> bytes:
        # Functions first: interning their names adds to the string table written last.
        functions = [
            _len(
                5,
                _uint(1, fid)
                + _uint(2, self.string(name))
                + _uint(3, self.string(name))
                + _uint(4, self.string(filename))
                + _uint(5, start_line),
            )
            for (name, filename, start_line), fid in self._functions.items()
        ]
        parts = [_len(1, t) for t in self._sample_types]
        for (stack, labels), values in self._samples.items():
            label_msgs = b"".join(_len(3, _uint(1, k) + _uint(2, v)) for k, v in labels)
            parts.append(_len(2, _packed(1, stack) + _packed(2, values) + label_msgs))
        parts += [
            _len(4, _uint(1, lid) + _len(4, _uint(1, fid) + _uint(2, line)))
            for (fid, line), lid in self._locations.items()
        ]
        parts += functions
        parts += [_len(6, s.encode("utf-8", "backslashreplace")) for s in self._strings]
        parts += [_uint(9, time_nanos), _uint(10, duration_nanos)]
        if self._period_type:
            parts += [_len(11, self._period_type), _uint(12, self._period)]
        return gzip.compress(b"".join(parts))


# ---------------------------------------------------------------------------------------- CPU


async def cpu_profile(seconds: float, *, interval: float = 0.01) -> bytes:
    """Sample all threads every ``interval`` seconds for ``seconds``; return a gzipped pprof.

    Raises :class:`ValueError` for ``seconds`` outside ``(0, MAX_CPU_PROFILE_SECONDS]`` or a bad
    ``interval``, :class:`ProfileBusy` while another CPU profile runs. Cancelling the awaiting
    task stops the sampler within one interval.
    """
    if not 0 < seconds <= MAX_CPU_PROFILE_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_CPU_PROFILE_SECONDS:g}], got {seconds}")
    if not _MIN_INTERVAL <= interval <= seconds:
        raise ValueError(f"interval must be in [{_MIN_INTERVAL}, seconds], got {interval}")
    if not _cpu_lock.acquire(blocking=False):
        raise ProfileBusy("a CPU profile is already being taken")
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()
    stop = threading.Event()

    def deliver(result: bytes | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or b"")

    def run() -> None:
        result: bytes | None = None
        error: BaseException | None = None
        try:
            result = _sample(seconds, interval, stop)
        except BaseException as exc:
            error = exc
        finally:
            _cpu_lock.release()  # before the waiter resumes, so it may profile again at once
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
            loop.call_soon_threadsafe(deliver, result, error)

    try:
        threading.Thread(target=run, name="pprof-cpu-sampler", daemon=True).start()
    except BaseException:
        _cpu_lock.release()
        raise
    try:
        return await future
    except asyncio.CancelledError:
        stop.set()
        raise


def _sample(seconds: float, interval: float, stop: threading.Event) -> bytes:
    interval_ns = round(interval * 1e9)
    builder = _ProfileBuilder(
        [("samples", "count"), ("cpu", "nanoseconds")], ("cpu", "nanoseconds"), interval_ns
    )
    me = threading.get_ident()
    last_cpu: dict[int, int] = {}
    _thread_cpu_deltas(last_cpu)  # prime, so the first tick already has deltas
    start_wall, start = time.time_ns(), time.monotonic()
    tick = 0
    while True:
        tick += 1
        deadline = start + tick * interval
        if deadline > start + seconds or stop.wait(max(0.0, deadline - time.monotonic())):
            break
        names, deltas = _thread_cpu_deltas(last_cpu)
        for ident, frame in sys._current_frames().items():
            cpu_ns = deltas.get(ident, interval_ns)  # wall-clock fallback without a CPU clock
            if ident != me and cpu_ns > 0:  # <= 0: idle since the last tick, new, or gone
                thread = names.get(ident, str(ident))
                builder.add_sample(_stack(builder, frame), [1, cpu_ns], [("thread", thread)])
    return builder.build(time_nanos=start_wall, duration_nanos=time.time_ns() - start_wall)


def _stack(builder: _ProfileBuilder, frame: FrameType | None) -> list[int]:
    """Location ids of ``frame`` and its callers, leaf first."""
    stack: list[int] = []
    while frame is not None and len(stack) < _MAX_STACK_DEPTH:
        code = frame.f_code
        line = frame.f_lineno or 0
        stack.append(
            builder.location(code.co_qualname, code.co_filename, code.co_firstlineno, line)
        )
        frame = frame.f_back
    return stack


def _thread_cpu_deltas(last_cpu: dict[int, int]) -> tuple[dict[int, str], dict[int, int]]:
    """Thread names, and CPU ns each thread used since the last call (Linux only), by ident."""
    names: dict[int, str] = {}
    deltas: dict[int, int] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        names[thread.ident] = thread.name
        native_id = thread.native_id
        if not _LINUX or native_id is None:
            continue
        try:  # MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED); EINVAL once the thread has exited
            now = time.clock_gettime_ns((~native_id << 3) | 6)
        except OSError:
            deltas[thread.ident] = 0
            continue
        deltas[thread.ident] = now - last_cpu.get(native_id, now)
        last_cpu[native_id] = now
    return names, deltas


# --------------------------------------------------------------------------------------- heap


def start_heap_tracing(nframes: int = 25) -> None:
    """Start tracemalloc with ``nframes`` frames per traceback, unless it already traces."""
    if not tracemalloc.is_tracing():
        tracemalloc.start(nframes)


def heap_profile() -> bytes:
    """Return live Python allocations as a gzipped pprof (inuse_objects, inuse_space).

    The first call starts tracemalloc if needed, so its profile is nearly empty; allocations
    made before tracing began never show up. Blocking: call via ``asyncio.to_thread``.
    """
    start_heap_tracing()
    stats = tracemalloc.take_snapshot().statistics("traceback")
    names = _names_by_line({frame.filename for stat in stats for frame in stat.traceback})
    builder = _ProfileBuilder(
        [("inuse_objects", "count"), ("inuse_space", "bytes")], ("space", "bytes"), 1
    )
    locations: dict[tuple[str, int], int] = {}
    for stat in stats:
        stack = []
        for frame in reversed(stat.traceback):  # tracemalloc lists the oldest frame first
            key = (frame.filename, frame.lineno)
            if key not in locations:
                name, first_line = names.get(key, ("<module>", 0))
                locations[key] = builder.location(name, frame.filename, first_line, frame.lineno)
            stack.append(locations[key])
        builder.add_sample(stack, [stat.count, stat.size])
    return builder.build(time_nanos=time.time_ns())


def _names_by_line(filenames: set[str]) -> dict[tuple[str, int], tuple[str, int]]:
    """Map (filename, line) to (co_qualname, co_firstlineno) of the innermost code there.

    tracemalloc frames carry no function, so look at the code of every live function in those
    files and at the code nested in it. Lines outside any (module, class bodies) stay unnamed.
    """
    pending = [
        obj.__code__
        for obj in gc.get_objects()
        if isinstance(obj, FunctionType) and obj.__code__.co_filename in filenames
    ]
    seen: set[CodeType] = set()
    names: dict[tuple[str, int], tuple[str, int]] = {}
    while pending:
        code = pending.pop()
        if code in seen:
            continue
        seen.add(code)
        pending += (c for c in code.co_consts if isinstance(c, CodeType))
        for _start, _end, line in code.co_lines():
            key = (code.co_filename, line or 0)
            if line and names.get(key, ("", 0))[1] <= code.co_firstlineno:
                names[key] = (code.co_qualname, code.co_firstlineno)
    return names
