"""CPU and heap profiles of this Python process in Go's pprof format, for /debug/pprof.

Both are gzip-compressed ``perftools.profiles.Profile`` messages (google/pprof
proto/profile.proto) from the small hand-written protobuf encoder below, so ``go tool pprof``
reads them. :class:`_ProfileBuilder` interns strings, functions and locations for both.
pprof wants stacks leaf-first (``location_id[0]`` is the running frame, the last the root):
walking ``frame.f_back`` gives that order, and so do tracemalloc's raw tracebacks.

CPU: a dedicated thread wakes every ``interval`` and snapshots the other threads' stacks with
``sys._current_frames()``; being a thread, it sees a stack even while a coroutine hogs the
loop, and the awaiting coroutine just waits on a future. On Linux a sample's ``cpu`` is the CPU
time the thread used since the previous tick, read from its kernel CPU clock (built from
``Thread.native_id`` as glibc's ``pthread_getcpuclockid`` does, but safe for exited threads), so
idle threads (a loop parked in epoll) leave no samples; elsewhere each thread counts one
``interval`` per tick (wall clock). Samples carry a ``thread`` label. One profile at a time.

The main thread (the event loop's, when the profile is asked for from it) is sampled as Go's
profiler samples: ``SIGPROF`` from ``setitimer(ITIMER_PROF)``, which the kernel sends as the
process uses CPU, and whose handler runs on the main thread at its next bytecode and records
the stack it interrupted. A thread can only take a sample of another when that one lets go
of the GIL, which it does at every system call: sampled from a thread, a loop that writes a
log line or a TLS record per request showed a quarter of its CPU in ``write`` and ``select``
that were not there (bench/README.md, eighth session).

Heap: live allocations traced by :mod:`tracemalloc`, one sample per distinct traceback. Tracing
is costly (every allocation records a traceback: several times slower, and every live block
keeps one), so it runs only for the window a request asks for: :func:`heap_profile_window`
starts tracing, lets the process work for ``seconds``, takes the profile and stops tracing
again. The profile shows what was allocated in that window and is still live, like Go's
``heap?seconds=N``. A process started with ``PYTHONTRACEMALLOC=25`` traces from its first
allocation; then the window may be 0 and tracing is left on. The profile reads the raw list
behind ``take_snapshot()`` and creates few objects. Trace frames give only file and line;
names come from live functions' code (``co_qualname``, as in CPU profiles), and lines outside
any (module or class body) are ``<module>``. It takes seconds on a big heap, so it runs in a
thread.
"""

from __future__ import annotations

import _tracemalloc
import asyncio
import bisect
import concurrent.futures
import gc
import gzip
import operator
import signal
import sys
import threading
import time
import tracemalloc
import weakref
from collections.abc import Iterable, Sequence
from types import CodeType, FrameType, FunctionType
from typing import Any

DEFAULT_CPU_PROFILE_SECONDS = 30.0
MAX_CPU_PROFILE_SECONDS = 300.0
DEFAULT_HEAP_WINDOW_SECONDS = 30.0
HEAP_TRACEBACK_FRAMES = 25
_MIN_INTERVAL = 0.001
_MAX_STACK_DEPTH = 256
_LINUX = sys.platform.startswith("linux")
_cpu_lock = threading.Lock()
_heap_lock = asyncio.Lock()


class ProfileBusy(RuntimeError):
    """Another profile of the same kind is already being taken."""


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


_Pair = tuple[str, str]


class _ProfileBuilder:
    """Interns strings, functions and locations, then encodes and gzips the Profile."""

    def __init__(self, sample_types: Sequence[_Pair], period_type: _Pair, period: int) -> None:
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
        location_ids: tuple[int, ...],
        values: list[int],
        labels: Sequence[_Pair] = (),
    ) -> None:
        """Add ``values`` (kept, not copied) for a leaf-first stack; repeats are summed."""
        label_ids = tuple([(self.string(k), self.string(v)) for k, v in labels]) if labels else ()
        totals = self._samples.get((location_ids, label_ids))
        if totals is None:
            self._samples[location_ids, label_ids] = values
        else:
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
    done: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done.set_running_or_notify_cancel()  # so cancelling the waiter cannot cancel this
    stop = threading.Event()
    try:
        main = _MainThreadSampler.start(interval)
    except BaseException:
        _cpu_lock.release()
        raise

    def run() -> None:
        try:
            profile = _sample(seconds, interval, stop, main)
        except BaseException as exc:
            _cpu_lock.release()  # first, so the waiter may profile again at once
            done.set_exception(exc)
        else:
            _cpu_lock.release()
            done.set_result(profile)

    try:
        threading.Thread(target=run, name="pprof-cpu-sampler", daemon=True).start()
    except BaseException:
        if main is not None:
            main.stop()
            main.restore()
        _cpu_lock.release()
        raise
    try:
        return await asyncio.wrap_future(done)
    except asyncio.CancelledError:
        stop.set()
        raise
    finally:
        if main is not None:
            main.restore()  # the handler goes on the main thread, once the timer is off


class _MainThreadSampler:
    """The main thread's stacks, recorded by its own ``SIGPROF`` handler (see the module's
    docstring). Each record is the interrupted stack, leaf first, as (code, line) pairs, and
    the main thread's CPU since the previous record, capped at one interval."""

    def __init__(self, interval: float) -> None:
        self.ident = threading.get_ident()
        self.records: list[tuple[tuple[tuple[CodeType, int], ...], int]] = []
        self._cap = round(interval * 1e9)
        self._last = time.clock_gettime_ns(time.CLOCK_THREAD_CPUTIME_ID)
        self._previous: Any = None

    @classmethod
    def start(cls, interval: float) -> _MainThreadSampler | None:
        """Handler and timer installed; None where that cannot be (not the main thread, no
        ITIMER_PROF): then the thread samples every thread, the main one included."""
        if not _LINUX or threading.current_thread() is not threading.main_thread():
            return None
        sampler = cls(interval)
        sampler._previous = signal.signal(signal.SIGPROF, sampler._on_signal)
        signal.siginterrupt(signal.SIGPROF, False)  # restart system calls, do not fail them
        signal.setitimer(signal.ITIMER_PROF, interval, interval)
        return sampler

    def _on_signal(self, _signum: int, frame: FrameType | None) -> None:
        now = time.clock_gettime_ns(time.CLOCK_THREAD_CPUTIME_ID)
        cpu, self._last = min(now - self._last, self._cap), now
        if cpu <= 0 or frame is None:
            return  # the CPU was another thread's
        stack: list[tuple[CodeType, int]] = []
        while frame is not None and len(stack) < _MAX_STACK_DEPTH:
            stack.append((frame.f_code, frame.f_lineno or 0))
            frame = frame.f_back
        self.records.append((tuple(stack), cpu))

    def stop(self) -> list[tuple[tuple[tuple[CodeType, int], ...], int]]:
        """Timer off (from any thread); the records so far."""
        signal.setitimer(signal.ITIMER_PROF, 0)
        return list(self.records)

    def restore(self) -> None:
        """The previous handler back (main thread only); where that was the default, which
        ends the process, SIGPROF is ignored instead: a signal already on its way when the
        timer stopped must not stop the operator."""
        signal.setitimer(signal.ITIMER_PROF, 0)
        previous = self._previous
        if previous in (None, signal.SIG_DFL):
            previous = signal.SIG_IGN
        signal.signal(signal.SIGPROF, previous)


def _sample(
    seconds: float, interval: float, stop: threading.Event, main: _MainThreadSampler | None
) -> bytes:
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
            if main is not None and ident == main.ident:
                continue  # its own handler samples it
            cpu_ns = deltas.get(ident, interval_ns)  # wall-clock fallback without a CPU clock
            if ident != me and cpu_ns > 0:  # <= 0: idle since the last tick, new, or gone
                thread = names.get(ident, str(ident))
                builder.add_sample(_stack(builder, frame), [1, cpu_ns], [("thread", thread)])
    if main is not None:
        label = [("thread", threading.main_thread().name)]
        for frames, cpu_ns in main.stop():
            stack = tuple(
                builder.location(c.co_qualname, c.co_filename, c.co_firstlineno, line)
                for c, line in frames
            )
            builder.add_sample(stack, [1, cpu_ns], label)
    return builder.build(time_nanos=start_wall, duration_nanos=time.time_ns() - start_wall)


def _stack(builder: _ProfileBuilder, frame: FrameType | None) -> tuple[int, ...]:
    """Location ids of ``frame`` and its callers, leaf first."""
    stack: list[int] = []
    while frame is not None and len(stack) < _MAX_STACK_DEPTH:
        code, line, frame = frame.f_code, frame.f_lineno or 0, frame.f_back
        stack.append(
            builder.location(code.co_qualname, code.co_filename, code.co_firstlineno, line)
        )
    return tuple(stack)


def _thread_cpu_deltas(last_cpu: dict[int, int]) -> tuple[dict[int, str], dict[int, int]]:
    """Thread names, and CPU ns each thread used since the last call (Linux only), by ident."""
    names: dict[int, str] = {}
    deltas: dict[int, int] = {}
    for thread in threading.enumerate():
        ident, tid = thread.ident or 0, thread.native_id
        names[ident] = thread.name
        if _LINUX and tid is not None:
            try:  # MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED); EINVAL once the thread exited
                now = time.clock_gettime_ns((~tid << 3) | 6)
            except OSError:
                now = last_cpu.get(tid, 0)
            deltas[ident], last_cpu[tid] = now - last_cpu.get(tid, now), now
    return names, deltas


async def heap_profile_window(seconds: float) -> bytes:
    """Trace allocations for ``seconds``, then return what is still live as a gzipped pprof.

    Tracing starts here and stops when the window ends (also when the caller is cancelled),
    unless it was already on (``PYTHONTRACEMALLOC``): then it is left on, and ``seconds`` may
    be 0. Raises :class:`ValueError` for a window outside ``[0, MAX_CPU_PROFILE_SECONDS]`` (0
    only while already tracing), :class:`ProfileBusy` while another heap profile runs.
    """
    already = tracemalloc.is_tracing()
    if not (0 if already else 0.001) <= seconds <= MAX_CPU_PROFILE_SECONDS:
        raise ValueError(
            f"seconds must be in (0, {MAX_CPU_PROFILE_SECONDS:g}] (0 only with "
            f"PYTHONTRACEMALLOC set), got {seconds}"
        )
    if _heap_lock.locked():
        raise ProfileBusy("a heap profile is already being taken")
    async with _heap_lock:  # no await since `already` was read: it still holds
        if not already:
            tracemalloc.start(HEAP_TRACEBACK_FRAMES)
        try:
            await asyncio.sleep(seconds)
            return await asyncio.to_thread(heap_profile)
        finally:
            if not already:
                tracemalloc.stop()


def heap_profile() -> bytes:
    """Return live Python allocations traced so far as a gzipped pprof (inuse_objects,
    inuse_space); empty (but valid) when tracemalloc is off. Blocking: run it in a thread.
    """
    sizes_by_stack: dict[Sequence[tuple[str, int]], list[int]] = {}
    for trace in _tracemalloc._get_traces():  # (domain, size, frames, total frames)
        size, frames = trace[1], trace[2]
        sizes = sizes_by_stack.get(frames)
        if sizes is None:
            sizes = sizes_by_stack[frames] = []
        sizes.append(size)  # sum() later adds in C without an int object per step
    builder = _ProfileBuilder(
        [("inuse_objects", "count"), ("inuse_space", "bytes")], ("space", "bytes"), 1
    )
    locations = _HeapLocations(builder, {name for frames in sizes_by_stack for name, _ in frames})
    for frames, sizes in sizes_by_stack.items():  # frames are leaf first, as pprof wants
        builder.add_sample(locations.stack(frames), [len(sizes), sum(sizes)])
    return builder.build(time_nanos=time.time_ns())


_FIRST_LINE = operator.attrgetter("co_firstlineno")
_LAST_LINES: weakref.WeakKeyDictionary[CodeType, int] = weakref.WeakKeyDictionary()


class _HeapLocations:
    """Location ids for tracemalloc frames (file, line), named after live code objects."""

    def __init__(self, builder: _ProfileBuilder, filenames: set[str]) -> None:
        self._builder = builder
        self._ids: dict[object, int] = {}
        self._previous: tuple[str, int] | None = None
        self._repeat = 0
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
            codes.sort(key=_FIRST_LINE)

    def stack(self, frames: Sequence[tuple[str, int]]) -> tuple[int, ...]:
        self._previous = None
        return tuple(map(self._locate, frames))

    def _locate(self, frame: tuple[str, int]) -> int:
        # A comprehension and its caller share one line: count such repeats for _name.
        self._repeat = self._repeat + 1 if frame == self._previous else 0
        self._previous = frame
        key = (frame, self._repeat) if self._repeat else frame
        location_id = self._ids.get(key)
        if location_id is None:
            name, first_line = self._name(*frame, self._repeat)
            location_id = self._builder.location(name, frame[0], first_line, frame[1])
            self._ids[key] = location_id
        return location_id

    def _name(self, filename: str, line: int, repeat: int) -> tuple[str, int]:
        """(co_qualname, co_firstlineno) of the innermost code spanning ``line``.

        With ``repeat`` > 0 the frame below had the same file and line: this frame is the caller
        of that many anonymous codes (comprehension, lambda); a named one means recursion.
        """
        codes = self._codes.get(filename, [])
        # Nearest preceding start first: nested code starts after, and ends before, its parent.
        for i in range(bisect.bisect_right(codes, line, key=_FIRST_LINE) - 1, -1, -1):
            code = codes[i]
            last = _LAST_LINES.get(code)
            if last is None:  # slow under tracing (an int object per step), hence the cache
                lines = (n for _start, _end, n in code.co_lines() if n is not None)
                last = _LAST_LINES[code] = max(lines, default=code.co_firstlineno)
            if line <= last:
                if repeat and code.co_name.startswith("<"):
                    repeat -= 1
                    continue
                return code.co_qualname, code.co_firstlineno
        return "<module>", 0
