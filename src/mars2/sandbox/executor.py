"""Parent side of the code-execution sandbox (method.md §2): scores programs on a problem's tests.

Each worker is a long-lived *fork server* (``python -I`` importing :mod:`mars2.sandbox.harness` from its
cached bytecode and running its ``main``) that set up its isolation once and forks a fresh child per
program run (all its tests in order; a fresh ``__main__`` per stdin test; with ``fresh_process_per_test``
one child per test). The parent

- ships the program and the test **inputs** to a server – never the expected outputs;
- receives raw results (a serialised return value, captured stdout, or an error) test by test;
- compares them here, on plain decoded values, so that nothing the program does (``__eq__`` overrides,
  printing "PASS", exiting early, patching builtins) can make a test pass;
- never blocks forever: every run has a deadline, and a server that misses it or dies is killed and
  replaced, its unanswered tests getting a runtime-error verdict.

Isolation actually achieved is reported by :attr:`Sandbox.isolation` and set up by the server once:

- as root (here, and CI): a network namespace without interfaces; a private mount namespace with a
  minimal read-only root (``chroot``: /usr, /bin, /lib*, /etc and the interpreter's directories, wherever
  the venv lives, /tmp included; fresh tmpfs /tmp, /var/tmp, /dev/shm wiped after every run; /proc with
  ``hidepid``); a private IPC namespace (SysV shm/msg/sem and POSIX queues removed after every run); a
  memory cgroup of the server's own that limits all processes of a run together (cgroup v2
  ``memory.max``, else v1 ``memory.limit_in_bytes``; ``memory_mb`` + 32 MB; an OOM kill is a ``memory``
  verdict); per run a fresh PID namespace whose PID 1 is the child (killing it kills everything the
  program started) and a uid of the server's own (2,000,000 + server pid: RLIMIT_NPROC counts only our
  children; no write access anywhere but the work dir);
- unprivileged with user namespaces: the same network/mount/IPC/root isolation and one PID namespace
  per server with a private /proc; the program keeps the caller's uid, without capabilities; a memory
  cgroup only where one is delegated to the caller;
- neither: no network, file-system or IPC isolation (one warning; ``network=namespace`` refuses to
  start), only rlimits, sessions and a descendant sweep.
Every child: own session, rlimits (CPU, address space, file size, open files, processes, no core),
no-new-privileges, death with the server, only its own fds, a scrubbed environment, and last a seccomp
filter (:func:`harness.seccomp_program`: keyrings, io_uring, userfaultfd, bpf, ptrace, perf, the mount
family, namespaces, kexec/modules, process_vm_* denied; sockets only AF_UNIX/INET/INET6). Without a
memory cgroup, memory is limited per process only (RLIMIT_AS; a run may use ``max_processes`` times
``memory_mb``), which ``isolation["memory"] == "rlimit_as"`` and a note say.

Comparison (our choices, documented in the README):

- functional: Python equality on the decoded values, tuples compared as lists; where the expected value
  is a float (anywhere inside), a number within ``float_tol`` (relative or absolute) is accepted; an
  expected int or bool compares exactly (``True == 1`` and ``7.0 == 7`` as in Python and HumanEval's
  ``assert ==``, but ``1.0000009 != True``).
- stdin: tokens separated by any Unicode whitespace (``str.split``); an expected integer token needs the
  same integer (leading zeros and ``+`` ignored) or a decimal of exactly that value (``7.0``, as
  LiveCodeBench's Decimal comparison); other numeric tokens within ``float_tol`` (0 = exact text); any
  Unicode decimal digits (full-width, Arabic-Indic) are read by value, as Decimal does in LiveCodeBench;
  trailing whitespace never matters.
- judging never raises: whatever goes wrong while reading or comparing a result becomes that test's
  verdict, so one sampled program cannot crash a training or evaluation run.
"""
from __future__ import annotations

import dataclasses
import decimal
import logging
import math
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
import unicodedata
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mars2.sandbox import harness
from mars2.sandbox.types import Evaluation, ExecResult, Status, TestVerdict
from mars2.tasks.problem import Problem, TestCase

log = logging.getLogger(__name__)

HARNESS_PATH = str(Path(harness.__file__).resolve())
# The server imports the harness from its cached bytecode instead of running it as a script: a script is
# compiled from source at every start, which leaves ~4 MB of freed compiler memory resident in the server,
# and every fork maps (and every child's exit unmaps) all of it.
_LAUNCH = ("import importlib.util as u, sys; s = u.spec_from_file_location('mars2_sandbox_server', sys.argv[1]); "
           "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); m.main()")
_TRIM = 1000  # characters of input/expected/actual kept in a verdict (feedback trims further)
_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()


def _warn_once(key: str, msg: str) -> None:
    with _WARN_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    log.warning(msg)


LAYERS = ("memory_cgroup", "ipcns", "seccomp", "pidns")


@dataclass
class SandboxConfig:
    """Limits and behaviour of the sandbox (conf/sandbox/*.yaml; method.md §2 for the real-scale values)."""

    timeout_s: float = 2.0  # per test case, wall clock (also bounds loading the program)
    # Memory of one program run: all its processes together (a memory cgroup of the server's own, limit
    # memory_mb + 32 MB) where the host gives one, and per process (RLIMIT_AS) always; 0 = none
    memory_mb: int = 512
    max_output_bytes: int = 1 << 16  # stdout / serialised result cap per test (raised to 2x the expected size)
    workers: int = 2  # programs scored concurrently (one fork server each)
    # "auto": network namespace if the host allows, else one warning; "namespace": required; "off": none
    network: str = "auto"
    float_tol: float = 1e-6  # float comparison tolerance (0 = exact)
    stop_on_first_failure: bool = False  # verdict lists then end at the first failure (per test set)
    max_processes: int = 16  # RLIMIT_NPROC for the program's uid (threads count too)
    open_files: int = 64  # RLIMIT_NOFILE
    file_size_mb: int = 16  # RLIMIT_FSIZE (largest file the program may write)
    tmpfs_mb: int = 64  # size of each private tmpfs over /tmp, /var/tmp, /dev/shm, ... (root / userns only)
    # False (fast): one child runs a program's tests one after another (a fresh __main__ per stdin test);
    # True (strict): a fresh process per test, as a judge does. Both contain the program equally well.
    fresh_process_per_test: bool = False
    # Root / user namespaces: children see a minimal read-only root (system dirs + the interpreter), not
    # the host's files (the project, data sets with expected outputs). False: the host tree, read-only
    # for the program's uid except the private tmpfs.
    minimal_root: bool = True
    # After this many timed-out tests in one run, the remaining tests are not run and count as timeouts
    # (None: run every test; method.md bounds a run only by n_tests × timeout). Saves a worker from spending
    # n_tests × timeout_s on one endless loop.
    max_timeouts: int | None = None
    # Benchmarks only (benchmarks/bench_sandbox.py measures what each layer costs): layers not set up,
    # any of "memory_cgroup", "ipcns", "seccomp", "pidns". Reported in ``Sandbox.isolation``.
    layers_off: tuple[str, ...] = ()

    def validate(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"sandbox.timeout_s must be > 0, got {self.timeout_s}")
        if self.workers < 1:
            raise ValueError(f"sandbox.workers must be >= 1, got {self.workers}")
        if self.network not in ("auto", "namespace", "off"):
            raise ValueError(f"sandbox.network must be auto, namespace or off, got {self.network!r}")
        if self.memory_mb < 0 or self.max_output_bytes < 1 or self.float_tol < 0:
            raise ValueError("sandbox: memory_mb >= 0, max_output_bytes >= 1 and float_tol >= 0 are required")
        if self.max_timeouts is not None and self.max_timeouts < 1:
            raise ValueError(f"sandbox.max_timeouts must be None or >= 1, got {self.max_timeouts}")
        bad = set(self.layers_off) - set(LAYERS)
        if bad:
            raise ValueError(f"sandbox.layers_off: unknown layers {sorted(bad)} (known: {', '.join(LAYERS)})")
        if self.max_processes < 1 or self.open_files < 8:
            raise ValueError("sandbox: max_processes >= 1 and open_files >= 8 are required")


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): a server did not start or broke its protocol."""


# ----------------------------------------------------------------------------------------------------
# Comparison (parent side, on plain values only)
# ----------------------------------------------------------------------------------------------------

_NUM = (bool, int, float)


def _float_close(a: float | int, b: float | int, tol: float) -> bool:
    """``a`` within ``tol`` of ``b`` (relative or absolute); never raises (an int too large for a float
    is compared exactly)."""
    try:
        return a == b or math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    except (OverflowError, TypeError, ValueError):
        return a == b


def values_equal(actual: Any, expected: Any, tol: float, _depth: int = 0) -> bool:
    """Equality of two decoded values (only builtin types and :class:`harness.Opaque`). Numbers: an
    expected ``int``/``bool`` compares exactly (Python ``==``: ``1000000.0`` equals ``1000000``, a close
    float does not); an expected ``float`` accepts anything numeric within ``tol``. Never raises."""
    if _depth > 400:
        return False
    ta, tb = type(actual), type(expected)
    if ta is harness.Opaque or tb is harness.Opaque:
        return False
    if ta in _NUM and tb in _NUM:
        if tb is float and tol > 0:
            return _float_close(actual, expected, tol)
        return actual == expected
    if ta is list and tb is list:
        return len(actual) == len(expected) and all(
            values_equal(x, y, tol, _depth + 1) for x, y in zip(actual, expected))
    if ta is dict and tb is dict:
        return actual.keys() == expected.keys() and all(
            values_equal(actual[k], expected[k], tol, _depth + 1) for k in expected)
    if ta in (str, type(None), frozenset, set) and tb in (str, type(None), frozenset, set):
        return actual == expected
    return False


# Numbers in stdin output: as LiveCodeBench (Decimal), any Unicode decimal digit counts (full-width,
# Arabic-Indic, ...) and is read as its value; the patterns below run on tokens mapped to ASCII digits.
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|nan|infinity)",
                    re.IGNORECASE | re.ASCII)
_EXACT_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,6})?", re.ASCII)


def _ascii_digits(tok: str) -> str:
    if tok.isascii():
        return tok
    return "".join(str(unicodedata.decimal(c)) if unicodedata.category(c) == "Nd" else c for c in tok)


def _int_key(tok: str) -> str:
    sign = "-" if tok.startswith("-") else ""
    digits = tok.lstrip("+-").lstrip("0") or "0"
    return "0" if digits == "0" else sign + digits


def _same_number(x: str, y: str) -> bool:
    """Exact numeric equality of two decimal tokens (``1000000.0`` == ``1000000``; ``9e-7`` != ``0``);
    exponents are bounded so that a hostile ``1e999999999`` cannot make Decimal arithmetic explode."""
    if not (_EXACT_FLOAT.fullmatch(x) and _EXACT_FLOAT.fullmatch(y)):
        return False
    try:
        return decimal.Decimal(x) == decimal.Decimal(y)
    except (decimal.DecimalException, ValueError):
        return False


def _tokens_equal(actual: str, expected: str, tol: float) -> bool:
    if actual == expected:
        return True
    actual, expected = _ascii_digits(actual), _ascii_digits(expected)
    if _INT.fullmatch(expected):
        # an integer token compares exactly: as an integer, or as a decimal with the same value (1e6, 7.0)
        if _INT.fullmatch(actual):
            return _int_key(actual) == _int_key(expected)
        return _same_number(actual, expected)
    if tol > 0 and _FLOAT.fullmatch(actual) and _FLOAT.fullmatch(expected):
        try:
            fx, fy = float(actual), float(expected)
        except (ValueError, OverflowError):
            return False
        return _float_close(fx, fy, tol)
    return False


def outputs_equal(actual: str, expected: str, tol: float) -> bool:
    """stdin problems: token-wise comparison; tokens are separated by any Unicode whitespace (as
    ``str.split``: NBSP, U+2029 included), so blank lines and trailing newlines never matter."""
    a, e = actual.split(), str(expected).split()
    return len(a) == len(e) and all(_tokens_equal(x, y, tol) for x, y in zip(a, e))


def normalise_expected(value: Any) -> Any:
    """The expected value as the parent compares it: the same codec the child's result went through."""
    return harness.decode(harness.encode(value))


# ----------------------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------------------

def _trim(text: str, n: int = _TRIM) -> str:
    return text if len(text) <= n else text[:n] + "…"


def _safe_repr(v: Any) -> str:
    try:
        return repr(v)
    except Exception:  # noqa: BLE001 - test data is trusted, but be defensive in a display helper
        return f"<{type(v).__name__}>"


def _input_text(problem: Problem, test: TestCase) -> str:
    if problem.mode == "stdin":
        return _trim(str(test.input))
    args = test.input if isinstance(test.input, (list, tuple)) else [test.input]
    return _trim(", ".join(_safe_repr(a) for a in args))


def _expected_text(problem: Problem, test: TestCase) -> str:
    return _trim(str(test.output) if problem.mode == "stdin" else _safe_repr(test.output))


_KIND_STATUS: dict[str, Status] = {"error": "runtime_error", "timeout": "timeout", "memory": "memory",
                                   "olimit": "output_limit"}


def _type_name(v: Any) -> str:
    if type(v) is harness.Opaque:
        return v.type_name
    return {frozenset: "set", tuple: "list"}.get(type(v), type(v).__name__)


def _actual_text(actual: Any, expected: Any) -> str:
    """The value as the judge saw it; with its type where the types differ (an object whose ``__repr__``
    says "4" must not read like the expected 4)."""
    text = _trim(_safe_repr(actual))
    ta, te = _type_name(actual), _type_name(expected)
    if ta != te and not (ta in ("int", "float") and te in ("int", "float")):
        text += f" (type {ta})"
    return text


def _verdict(problem: Problem, test: TestCase, msg: dict, tol: float) -> TestVerdict:
    """Verdict of one result frame; never raises (an unexpected failure while judging is a verdict)."""
    try:
        return _judge(problem, test, msg, tol)
    except Exception as e:  # noqa: BLE001 - one program must never crash the caller
        try:
            return _failure_verdict(problem, test, "runtime_error",
                                    f"RuntimeError: the result could not be judged ({type(e).__name__})")
        except Exception:  # noqa: BLE001
            return TestVerdict("runtime_error", error="RuntimeError: the result could not be judged")


def _judge(problem: Problem, test: TestCase, msg: dict, tol: float) -> TestVerdict:
    kind = msg.get("k")
    base = dict(input=_input_text(problem, test), expected=_expected_text(problem, test),
                time_s=float(msg.get("t") or 0.0))
    if kind == "ok":
        if problem.mode == "stdin":
            out = str(msg.get("out", ""))
            ok = outputs_equal(out, str(test.output), tol)
            return TestVerdict("passed" if ok else "wrong_answer", actual=_trim(out), **base)
        try:
            actual = harness.decode(harness.loads(str(msg.get("v", ""))))
        except (ValueError, RecursionError, MemoryError):
            return TestVerdict("runtime_error", error="RuntimeError: the result could not be read", **base)
        expected = normalise_expected(test.output)
        ok = values_equal(actual, expected, tol)
        return TestVerdict("passed" if ok else "wrong_answer", actual=_actual_text(actual, expected), **base)
    status = _KIND_STATUS.get(str(kind), "runtime_error")
    error = str(msg.get("e") or "")
    if status == "memory" and not error.startswith("Memory"):
        error = "Memory limit exceeded." + (f"\n{error}" if error else "")
    actual = _trim(str(msg.get("out", ""))) if problem.mode == "stdin" else ""
    return TestVerdict(status, actual=actual, error=error, **base)


def _failure_verdict(problem: Problem, test: TestCase, status: Status, error: str) -> TestVerdict:
    return TestVerdict(status, input=_input_text(problem, test), expected=_expected_text(problem, test),
                       error=error)


# ----------------------------------------------------------------------------------------------------
# One fork server
# ----------------------------------------------------------------------------------------------------

def _remove_cgroup(path: Any) -> None:
    """The memory cgroup of a server that is gone (it cannot remove its own when killed). Its children
    die with it (PDEATHSIG); until they have, the cgroup is busy: a short bounded retry."""
    if not isinstance(path, str) or "/mars2-sandbox-" not in path:
        return
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    log.debug("sandbox: could not remove %s (the next server start removes it)", path)


class _ServerDied(Exception):
    pass


class _Worker:
    """Parent handle of one fork server process."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen | None = None
        self.reader = harness.FrameReader()
        self.frames: list[dict] = []
        self.iso: dict[str, Any] = {}
        self.rid = 0

    # -- life cycle ---------------------------------------------------------------------------------
    def launch(self) -> None:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}  # nothing secret reaches a server
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _LAUNCH, HARNESS_PATH], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, cwd="/", start_new_session=True, close_fds=True, bufsize=0,
        )
        self.reader = harness.FrameReader()
        self.frames = []
        init = {"network": self.cfg.network, "timeout_s": self.cfg.timeout_s, "memory_mb": self.cfg.memory_mb,
                "max_processes": self.cfg.max_processes, "open_files": self.cfg.open_files,
                "file_size_mb": self.cfg.file_size_mb, "tmpfs_mb": self.cfg.tmpfs_mb,
                "minimal_root": self.cfg.minimal_root, "layers_off": list(self.cfg.layers_off)}
        self._send(init)

    def await_hello(self, timeout: float = 60.0) -> None:
        msg = self._next(time.monotonic() + timeout)
        if msg.get("op") != "hello":
            raise _ServerDied(f"unexpected first message {msg!r}")
        self.iso = dict(msg.get("iso") or {})

    def start(self) -> None:
        self.launch()
        self.await_hello()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        try:
            os.killpg(p.pid, 9)  # its own session: the server and anything it still has there
        except OSError:
            pass
        for f in (p.stdin, p.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        _remove_cgroup(self.iso.get("memory_cgroup"))

    def close(self) -> None:
        p = self.proc
        if p is None:
            return
        try:
            self._send({"op": "exit"})
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired, _ServerDied):
            pass
        self.kill()

    # -- channel ------------------------------------------------------------------------------------
    def _send(self, obj: dict) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            harness.write_all(self.proc.stdin.fileno(), harness.frame(obj))
        except (OSError, ValueError) as e:
            raise _ServerDied(f"cannot write to the sandbox server: {e}") from None

    def _next(self, deadline: float) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while not self.frames:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise _ServerDied("the sandbox server missed its deadline")
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                continue
            data = os.read(fd, 1 << 20)
            if not data:
                raise _ServerDied("the sandbox server exited")
            self.frames.extend(self.reader.feed(data))
        return self.frames.pop(0)

    # -- one run ------------------------------------------------------------------------------------
    def execute(self, req: dict, on_result: Callable[[dict], int | None], budget_s: float) -> None:
        """Send a run request; ``on_result`` gets each result frame and may return a group to stop."""
        self.collect(self.submit(req), on_result, budget_s)

    def submit(self, req: dict) -> int:
        """Send a run request (the server queues it behind the ones it has); returns its id."""
        self.rid += 1
        self._send({**req, "op": "run", "id": self.rid})
        return self.rid

    def collect(self, rid: int, on_result: Callable[[dict], int | None], budget_s: float) -> None:
        """Result frames of run ``rid`` until it is done (frames of earlier runs are skipped)."""
        deadline = time.monotonic() + budget_s
        while True:
            msg = self._next(deadline)
            if msg.get("id") != rid:
                continue
            if msg.get("op") == "done":
                return
            if msg.get("op") == "res":
                stop = on_result(msg)
                if stop is not None:
                    self._send({"op": "stop", "id": rid, "group": stop})


# ----------------------------------------------------------------------------------------------------
# The sandbox
# ----------------------------------------------------------------------------------------------------

class _Job:
    """One program run as the parent sees it: the request (None when nothing needs running), the verdicts
    so far, and the callback that judges each result frame."""

    def __init__(self, sb: "Sandbox", program: str | None, problem: Problem, groups: list[list[TestCase]],
                 stop_on_first_failure: bool | None) -> None:
        cfg = sb.config
        self.stop = cfg.stop_on_first_failure if stop_on_first_failure is None else stop_on_first_failure
        self.problem, self.tol = problem, cfg.float_tol
        self.t_start = time.monotonic()
        self.flat = [(g, t) for g, tests in enumerate(groups) for t in tests]
        self.n_groups = len(groups)
        self.got: dict[int, TestVerdict] = {}
        self.stopped: set[int] = set()
        self.req: dict | None = None
        self.t_done: float | None = None  # when its results were all in (None: not run / not yet)
        self.rid = 0  # (pipelined) its request id at the server
        if program is None:
            for i, (g, t) in enumerate(self.flat):
                self.got[i] = _failure_verdict(problem, t, "no_code", "no code found")
            return
        if not self.flat:
            return
        self.req = sb._request(program, problem, self.flat)
        self.req["stream"] = self.stop  # results as they come (to stop early), else all at once
        timeout = cfg.timeout_s
        self.budget = len(self.flat) * (2 * timeout + 1.0) + timeout + 15.0

    def start(self) -> None:
        self.t_start = time.monotonic()

    def finish(self) -> None:
        self.t_done = time.monotonic()
        self.req = None  # every test input: not needed any more

    def on_result(self, msg: dict) -> int | None:
        i = msg.get("i")
        if not isinstance(i, int) or not 0 <= i < len(self.flat) or i in self.got:
            return None
        g, test = self.flat[i]
        if g in self.stopped:
            return None
        v = _verdict(self.problem, test, msg, self.tol)
        self.got[i] = v
        if self.stop and not v.passed:
            self.stopped.add(g)
            return g
        return None

    def fail(self, e: Exception) -> None:
        for i, (g, test) in enumerate(self.flat):
            if i not in self.got and g not in self.stopped:
                self.got[i] = _failure_verdict(self.problem, test, "runtime_error", f"SandboxError: {e}")
                if self.stop:
                    self.stopped.add(g)

    def results(self) -> list[ExecResult]:
        verdicts: list[list[TestVerdict]] = [[] for _ in range(self.n_groups)]
        for i, (g, _) in enumerate(self.flat):
            if i in self.got:
                verdicts[g].append(self.got[i])
        wall = 0.0 if self.t_done is None else self.t_done - self.t_start
        return [ExecResult(v, wall) for v in verdicts]


class Sandbox:
    """Scores programs on tests (method.md §2). Thread-safe; ``evaluate_many`` runs ``workers`` programs at
    a time. Use as a context manager or call :meth:`close` (servers also exit when this process does)."""

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        cfg = dataclasses.replace(config or SandboxConfig(), **overrides)
        cfg.validate()
        self.config = cfg
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, Sandbox._shutdown, self._workers)

    # -- life cycle ---------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._workers:
            return
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            if self._workers:
                return
            workers = [_Worker(self.config) for _ in range(self.config.workers)]
            try:
                for w in workers:
                    w.launch()  # all start in parallel ...
                for w in workers:
                    w.await_hello()  # ... and are awaited together
            except _ServerDied as e:
                for w in workers:
                    w.kill()
                raise SandboxError(f"the sandbox server did not start: {e}") from None
            self._check_isolation(workers[0].iso)
            self._workers.extend(workers)
            for w in workers:
                self._idle.put(w)

    def _check_isolation(self, iso: dict[str, Any]) -> None:
        net = self.config.network
        if net == "namespace" and not iso.get("netns"):
            for w in self._workers:
                w.kill()
            raise SandboxError("sandbox.network=namespace but this host gives no network namespace: "
                               + "; ".join(iso.get("notes") or []))
        if net == "auto" and not iso.get("netns"):
            _warn_once("netns", "sandbox: no network namespace on this host; programs can reach the network "
                                "(set sandbox.network=off to silence, or run as root / allow user namespaces)")
        other = [n for n in iso.get("notes") or [] if "network" not in n]
        if other:
            _warn_once("iso", "sandbox: weaker isolation on this host: " + "; ".join(other))

    @property
    def isolation(self) -> dict[str, Any]:
        """What the servers achieved: netns, mountns, ipcns, tmpfs dirs, root, pidns, uid, seccomp, memory
        ("cgroup2" | "cgroup1" | "rlimit_as" | "none", with memory_cgroup and memory_run_mb), notes."""
        self._ensure_started()
        return dict(self._workers[0].iso)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        Sandbox._shutdown(self._workers)

    @staticmethod
    def _shutdown(workers: list[_Worker]) -> None:
        for w in workers:
            w.close()
        workers.clear()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------------------------
    def run(self, program: str | None, problem: Problem, tests: Sequence[TestCase],
            stop_on_first_failure: bool | None = None) -> ExecResult:
        """Verdicts of ``program`` on ``tests`` in order (with early stop: up to the first failure)."""
        return self._run_groups(program, problem, [list(tests)], stop_on_first_failure)[0]

    def evaluate(self, problem: Problem, program: str | None) -> Evaluation:
        """Public then hidden tests, in one program run."""
        public, hidden = self._run_groups(program, problem, [list(problem.public_tests), list(problem.hidden_tests)],
                                          None)
        return Evaluation(public=public, hidden=hidden)

    def evaluate_many(self, items: Sequence[tuple[Problem, str | None]]) -> list[Evaluation]:
        """:meth:`evaluate` over many (problem, program) pairs, ``workers`` at a time; order is kept. Each
        worker keeps the next request queued at its server, so judging one program overlaps the next run."""
        items = list(items)
        if not items:
            return []
        self._ensure_started()
        if len(items) == 1 or self.config.stop_on_first_failure:
            if self.config.workers == 1 or len(items) == 1:
                return [self.evaluate(p, prog) for p, prog in items]
            return list(self._thread_pool().map(lambda it: self.evaluate(it[0], it[1]), items))
        return self._evaluate_pipelined(items)

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="sandbox")
            return self._pool

    # -- internals ----------------------------------------------------------------------------------
    def _run_groups(self, program: str | None, problem: Problem, groups: list[list[TestCase]],
                    stop_on_first_failure: bool | None) -> list[ExecResult]:
        job = _Job(self, program, problem, groups, stop_on_first_failure)
        if job.req is None:
            return job.results()
        self._ensure_started()
        worker = self._idle.get()
        try:
            if not worker.alive():
                self._restart(worker)
            job.start()
            worker.execute(job.req, job.on_result, job.budget)
        except _ServerDied as e:
            log.warning("sandbox: server failure (%s); restarting it", e)
            self._restart(worker, quiet=True)
            job.fail(e)
        finally:
            self._idle.put(worker)
        job.finish()
        return job.results()

    def _evaluate_pipelined(self, items: list[tuple[Problem, str | None]]) -> list[Evaluation]:
        """:meth:`evaluate` over ``items``, each worker keeping two requests at its server: the next one is
        sent before the current one's results are read (the server runs queued requests one after
        another), so judging here overlaps the next run. Workers take the next item when they have room
        (order of the results is kept). Verdicts and failure handling are those of :meth:`evaluate`."""
        jobs: list[_Job | None] = [None] * len(items)
        lock = threading.Lock()
        nxt = iter(range(len(items)))

        def take() -> int | None:
            with lock:
                idx = next(nxt, None)
            if idx is not None:  # built when first needed (requests hold every test input)
                p, prog = items[idx]
                jobs[idx] = _Job(self, prog, p, [list(p.public_tests), list(p.hidden_tests)], None)
            return idx

        n = min(self.config.workers, len(items))
        if n == 1:
            self._pipeline(jobs, take)
        else:
            futures = [self._thread_pool().submit(self._pipeline, jobs, take) for _ in range(n)]
            for f in futures:
                f.result()
        out = []
        for job in jobs:
            assert job is not None
            public, hidden = job.results()
            out.append(Evaluation(public=public, hidden=hidden))
        return out

    def _pipeline(self, jobs: "list[_Job | None]", take: Callable[[], int | None]) -> None:
        """One worker's share of :meth:`_evaluate_pipelined`."""
        worker = self._idle.get()
        try:
            inflight: list[int] = []  # item indices, in the server's order
            retry: list[int] = []  # requests a dead server had queued: sent again first
            exhausted = False
            while True:
                try:
                    if not worker.alive():
                        self._restart(worker)  # raises SandboxError if it cannot (as evaluate does)
                    while len(inflight) < 2:
                        if retry:
                            idx: int | None = retry.pop(0)
                        elif exhausted:
                            break
                        else:
                            idx = take()
                            if idx is None:
                                exhausted = True
                                break
                        job = jobs[idx]
                        assert job is not None
                        if job.req is not None:  # else nothing to run (no code, no tests)
                            inflight.append(idx)  # first: a failed send fails this run, as in evaluate
                            job.rid = worker.submit(job.req)
                    if not inflight:
                        return
                    job = jobs[inflight[0]]
                    assert job is not None
                    job.start()
                    worker.collect(job.rid, job.on_result, job.budget)
                    job.finish()
                    inflight.pop(0)
                except _ServerDied as e:
                    log.warning("sandbox: server failure (%s); restarting it", e)
                    self._restart(worker, quiet=True)
                    if inflight:  # the server runs requests in order: the first one was running
                        failed = jobs[inflight.pop(0)]
                        assert failed is not None
                        failed.fail(e)
                        failed.finish()
                    retry = inflight + retry
                    inflight = []
        finally:
            self._idle.put(worker)

    def _restart(self, worker: _Worker, quiet: bool = False) -> None:
        worker.kill()
        try:
            worker.start()
        except _ServerDied as e:
            if not quiet:
                raise SandboxError(f"the sandbox server did not restart: {e}") from None
            log.error("sandbox: the server did not restart: %s", e)

    def _request(self, program: str, problem: Problem, flat: list[tuple[int, TestCase]]) -> dict:
        cfg = self.config
        tests: list[Any] = []
        caps: list[int] = []
        for _, t in flat:
            if problem.mode == "stdin":
                tests.append(str(t.input))
                caps.append(max(cfg.max_output_bytes, 2 * len(str(t.output).encode("utf-8", "replace")) + 1024))
            else:
                args = list(t.input) if isinstance(t.input, (list, tuple)) else [t.input]
                tests.append(harness.encode(args, keep_tuples=True))
                caps.append(max(cfg.max_output_bytes, 2 * len(harness.dumps(harness.encode(t.output))) + 1024))
        return {"mode": problem.mode, "program": program, "isolate": cfg.fresh_process_per_test,
                "max_timeouts": cfg.max_timeouts, "entry": problem.entry_point,
                "prelude": str(getattr(problem, "prelude", "") or ""),
                "class_name": (problem.meta or {}).get("class_name"), "tests": tests, "caps": caps,
                "groups": [g for g, _ in flat], "timeout_s": cfg.timeout_s}
