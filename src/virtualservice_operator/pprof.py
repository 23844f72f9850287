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

Heap (:func:`heap_profile`): live allocations traced by :mod:`tracemalloc`, one sample per
distinct traceback. Objects allocated before tracing began are invisible, so the first call starts
tracing and shows little; call :func:`start_heap_tracing` at start-up (behind a flag) to see
everything. Tracing is costly: each allocation records a traceback (several times slower
allocation, more for deep stacks) and every live block keeps one, so memory use grows markedly.
That cost also hits the profile itself, so it reads the raw trace list behind
``take_snapshot()`` (``_tracemalloc._get_traces()``) and encodes into reused buffers, creating as
few objects as it can. Trace frames name only file and line; the function names come from the
code objects of live functions (``co_qualname``, as in CPU profiles); lines outside any live
function (module and class bodies) are called ``<module>``. :func:`heap_profile` blocks for
seconds on a large heap: call it via ``asyncio.to_thread``.

pprof wants stacks leaf-first: ``location_id[0]`` is the frame that was running, the last entry
is the root. Walking ``frame.f_back`` gives that order, and so do tracemalloc's raw tracebacks.
Both profiles share :class:`_ProfileBuilder`, which interns strings, functions and locations,
merges identical stacks and encodes the message.
"""

from __future__ import annotations

import _tracemalloc
import asyncio
import bisect
import contextlib
import gc
import gzip
import sys
import threading
import time
import tracemalloc
import weakref
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


def _varint(out: bytearray, value: int) -> None:
    if value < 0:
        value &= 0xFFFFFFFFFFFFFFFF  # int64 values travel as their 64-bit two's complement
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _uint(out: bytearray, field: int, value: int) -> None:
    """A varint field; zero is the proto3 default and is left out."""
    if value:
        _varint(out, field << 3)
        _varint(out, value)


def _len(out: bytearray, field: int, payload: bytes | bytearray) -> None:
    """A length-delimited field (string, embedded message, packed repeated)."""
    _varint(out, field << 3 | 2)
    _varint(out, len(payload))
    out += payload


def _pair(out: bytearray, field: int, first: int, second: int, scratch: bytearray) -> None:
    """An embedded message of two varint fields 1 and 2 (ValueType, Label, Line)."""
    scratch.clear()
    _uint(scratch, 1, first)
    _uint(scratch, 2, second)
    _len(out, field, scratch)


def _packed(out: bytearray, field: int, values: Iterable[int], scratch: bytearray) -> None:
    scratch.clear()
    for value in values:
        _varint(scratch, value)
    _len(out, field, scratch)


class _ProfileBuilder:
    """Interns strings, functions and locations, then encodes and gzips the Profile."""

    def __init__(
        self,
        sample_types: Sequence[tuple[str, str]],
        period_type: tuple[str, str],
        period: int,
    ) -> None:
        self._strings: dict[str, int] = {"": 0}
        self._functions: dict[tuple[str, str, int], int] = {}
        self._locations: dict[tuple[int, int], int] = {}
        self._samples: dict[tuple[tuple[int, ...], tuple[tuple[int, int], ...]], list[int]] = {}
        self._sample_types = [(self.string(t), self.string(u)) for t, u in sample_types]
        self._period_type = (self.string(period_type[0]), self.string(period_type[1]))
        self._period = period

    def string(self, text: str) -> int:
        return self._strings.setdefault(text, len(self._strings))

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
        label_ids = tuple([(self.string(k), self.string(v)) for k, v in labels]) if labels else ()
        totals = self._samples.setdefault((tuple(location_ids), label_ids), [0] * len(values))
        for i, value in enumerate(values):
            totals[i] += value

    def build(self, *, time_nanos: int, duration_nanos: int = 0) -> bytes:
        out, msg, sub = bytearray(), bytearray(), bytearray()  # buffers reused for every message
        for type_id, unit_id in self._sample_types:
            _pair(out, 1, type_id, unit_id, sub)
        for (stack, labels), values in self._samples.items():
            msg.clear()
            _packed(msg, 1, stack, sub)
            _packed(msg, 2, values, sub)
            for key_id, value_id in labels:
                _pair(msg, 3, key_id, value_id, sub)
            _len(out, 2, msg)
        for (function_id, line), location_id in self._locations.items():
            msg.clear()
            _uint(msg, 1, location_id)
            _pair(msg, 4, function_id, line, sub)
            _len(out, 4, msg)
        for (name, filename, start_line), function_id in self._functions.items():
            msg.clear()
            _uint(msg, 1, function_id)
            _uint(msg, 2, self.string(name))
            _uint(msg, 3, self.string(name))
            _uint(msg, 4, self.string(filename))
            _uint(msg, 5, start_line)
            _len(out, 5, msg)
        for text in self._strings:  # after the functions, which may intern new strings
            _len(out, 6, text.encode("utf-8", "backslashreplace"))
        _uint(out, 9, time_nanos)
        _uint(out, 10, duration_nanos)
        _pair(out, 11, *self._period_type, sub)
        _uint(out, 12, self._period)
        return gzip.compress(out)


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
    sizes_by_stack: dict[Sequence[tuple[str, int]], list[int]] = {}
    for trace in _tracemalloc._get_traces():  # (domain, size, frames, total frames)
        size, frames = trace[1], trace[2]
        sizes = sizes_by_stack.get(frames)
        if sizes is None:
            sizes = sizes_by_stack[frames] = []
        sizes.append(size)  # sum() later adds in C without an int object per step
    names = _CodeIndex({filename for frames in sizes_by_stack for filename, _ in frames})
    builder = _ProfileBuilder(
        [("inuse_objects", "count"), ("inuse_space", "bytes")], ("space", "bytes"), 1
    )
    locations: dict[tuple[str, int], int] = {}
    for frames, sizes in sizes_by_stack.items():
        stack = []
        for frame in frames:  # leaf first, as tracemalloc records them
            location_id = locations.get(frame)
            if location_id is None:
                name, first_line = names.lookup(*frame)
                location_id = builder.location(name, frame[0], first_line, frame[1])
                locations[frame] = location_id
            stack.append(location_id)
        builder.add_sample(stack, [len(sizes), sum(sizes)])
    return builder.build(time_nanos=time.time_ns())


_LAST_LINES: weakref.WeakKeyDictionary[CodeType, int] = weakref.WeakKeyDictionary()


class _CodeIndex:
    """Finds the innermost live code object around a file and line, for tracemalloc frames."""

    def __init__(self, filenames: set[str]) -> None:
        pending = [
            obj.__code__
            for obj in gc.get_objects()
            if isinstance(obj, FunctionType) and obj.__code__.co_filename in filenames
        ]
        seen: set[CodeType] = set()
        self._codes: dict[str, list[CodeType]] = {}
        while pending:
            code = pending.pop()
            if code not in seen:
                seen.add(code)
                self._codes.setdefault(code.co_filename, []).append(code)
                pending += [c for c in code.co_consts if isinstance(c, CodeType)]
        for codes in self._codes.values():
            codes.sort(key=_first_line)

    def lookup(self, filename: str, line: int) -> tuple[str, int]:
        """(co_qualname, co_firstlineno) of the innermost code spanning ``line``."""
        codes = self._codes.get(filename, [])
        # Nearest preceding start first: nested code starts after, and ends before, its parent.
        for i in range(bisect.bisect_right(codes, line, key=_first_line) - 1, -1, -1):
            code = codes[i]
            last = _LAST_LINES.get(code)
            if last is None:  # slow under tracing (an int object per step), hence the cache
                lines = (n for _start, _end, n in code.co_lines() if n is not None)
                last = _LAST_LINES[code] = max(lines, default=code.co_firstlineno)
            if line <= last:
                return code.co_qualname, code.co_firstlineno
        return "<module>", 0


def _first_line(code: CodeType) -> int:
    return code.co_firstlineno
