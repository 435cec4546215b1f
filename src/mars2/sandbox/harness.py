"""Child side of mars2.sandbox (method.md §2): value codec, message framing and the fork server.

This module is **stdlib only** and never imports ``mars2``: the parent starts ``python -I`` that imports
this file by path (from its cached bytecode: a script would be compiled from source at every start, and
the compiler's freed memory would stay resident in the server, to be mapped by every fork) and calls
:func:`main`. That long-lived *fork server* then forks one short-lived child per program run, which runs
the remaining tests one after another (stdin problems: a fresh ``__main__`` per test; ``isolate``: one
child per test). Interpreter start-up (~75–110 ms here) is paid once per server instead of once per test.

Trust boundaries (why things are where they are):

- The **server** is trusted. It never sees expected outputs (the parent keeps them), because every child is
  a copy of the server's memory: what the server holds, a hostile program could read.
- A **child** runs untrusted code. It reports raw results (a serialised return value, or captured stdout,
  or an exception) and the parent decides pass/fail, so a child can only ever claim *values* – overriding
  ``__eq__``, printing "PASS", exiting with status 0 or patching builtins cannot fake a pass.
- Containment is set up once per server where it is costly (network namespace, private mount namespace
  with fresh tmpfs over every world-writable directory) and per child where it is cheap (own PID
  namespace or session, dropped uid, rlimits, closed fds, scrubbed environment). Every step degrades to
  a documented weaker fallback when the host does not allow it; the server reports what it achieved.

The parent imports this module only for the codec (``encode``/``decode``) and the framing helpers.
"""
from __future__ import annotations

import atexit
import builtins
import ctypes
import errno
import gc
import json
import math
import os
import resource
import select
import signal
import stat
import struct
import sys
import time
import traceback
import types
from typing import Any, Callable

# ----------------------------------------------------------------------------------------------------
# Value codec: JSON trees with tagged containers (shared by parent and child)
# ----------------------------------------------------------------------------------------------------

_MAX_DEPTH = 200  # deeper values are rejected (a self-referencing list must not hang the encoder)
_BIG_INT = 10 ** 4000  # beyond this, ints travel as hex (CPython's int<->str digit limit is 4300)



def _interpreter_dirs() -> list[str]:
    """The directories the children need to run Python: the interpreter's prefixes and executable dir,
    plus the ``sys.path`` entries *inside* those prefixes (stdlib, site-packages). Other ``sys.path``
    entries – an editable install's ``src/``, the test directory pytest inserts, the current directory –
    belong to the project and must stay invisible to the programs."""
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix,
                                              sys.base_exec_prefix) if p}
    wanted = set(prefixes) | {os.path.dirname(os.path.realpath(sys.executable))}
    for p in sys.path:
        if not p:
            continue
        r = os.path.realpath(p)
        if any(r == q or r.startswith(q + "/") for q in prefixes):
            wanted.add(r)
    return sorted(p for p in wanted if os.path.isdir(p))

class Opaque:
    """A value that has no faithful JSON form (custom object, function, ...). Equal to nothing."""

    __slots__ = ("text", "type_name")

    def __init__(self, text: str, type_name: str = "object") -> None:
        self.text = text
        self.type_name = type_name

    def __eq__(self, other: object) -> bool:  # never equal, not even to itself
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return self.text


def encode(v: Any, keep_tuples: bool = False, _depth: int = 0) -> Any:
    """Python value → JSON-compatible tree. Containers other than list/str-free data are tagged:
    ``{"$t": [...]}`` tuple (only with ``keep_tuples``; otherwise tuples become lists),
    ``{"$d": [[k, v], ...]}`` dict, ``{"$s": [...]}`` set/frozenset, ``{"$i": "0x.."}`` huge int,
    ``{"$r": ["type name", "repr"]}`` anything else. Exact type checks, so subclasses cannot smuggle behaviour in."""
    if _depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(v)
    if v is None or t is bool or t is str or t is float:
        return v
    if t is int:
        return v if -_BIG_INT < v < _BIG_INT else {"$i": hex(v)}
    if t is list:
        return [encode(x, keep_tuples, _depth + 1) for x in v]
    if t is tuple:
        items = [encode(x, keep_tuples, _depth + 1) for x in v]
        return {"$t": items} if keep_tuples else items
    if t is dict:
        return {"$d": [[encode(k, keep_tuples, _depth + 1), encode(x, keep_tuples, _depth + 1)]
                       for k, x in v.items()]}
    if t is set or t is frozenset:
        return {"$s": [encode(x, keep_tuples, _depth + 1) for x in v]}
    # Subclasses of the plain types (e.g. an int subclass with a hostile __eq__) travel as their base
    # value: the parent compares plain values only.
    for base in (bool, int, float, str):
        if isinstance(v, base):
            return encode(base(v), keep_tuples, _depth + 1)
    for base in (list, tuple):
        if isinstance(v, base):
            return encode(base(v), keep_tuples, _depth + 1)
    if isinstance(v, dict):
        return encode(dict(v), keep_tuples, _depth + 1)
    tolist = getattr(type(v), "tolist", None)  # numpy arrays and scalars compare like lists / numbers
    if callable(tolist) and type(v).__module__.split(".")[0] == "numpy":
        return encode(tolist(v), keep_tuples, _depth + 1)
    try:
        text = repr(v)
    except BaseException:  # noqa: BLE001 - hostile __repr__
        text = f"<{t.__name__} object>"
    try:
        name = str(t.__qualname__)[:100]
    except BaseException:  # noqa: BLE001 - a metaclass with a hostile __qualname__
        name = "object"
    return {"$r": [name, str(text)[:200]]}


def _hashable(v: Any) -> Any:
    if type(v) is list:
        return tuple(_hashable(x) for x in v)
    if type(v) is dict:
        return frozenset((_hashable(k), _hashable(x)) for k, x in v.items())
    if type(v) is set:
        return frozenset(v)
    return v


def decode(tree: Any, keep_tuples: bool = False, _depth: int = 0) -> Any:
    """Inverse of :func:`encode`. Robust to malformed trees (they come from untrusted children):
    unknown tags stay plain dicts, unhashable keys become :class:`Opaque`."""
    if _depth > _MAX_DEPTH + 2:
        raise ValueError("value nested too deeply")
    t = type(tree)
    if t is list:
        return [decode(x, keep_tuples, _depth + 1) for x in tree]
    if t is not dict:
        return tree
    if len(tree) == 1:
        (tag, body), = tree.items()
        if tag == "$t" and type(body) is list:
            items = [decode(x, keep_tuples, _depth + 1) for x in body]
            return tuple(items) if keep_tuples else items
        if tag == "$d" and type(body) is list:
            out: dict[Any, Any] = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    return Opaque("<malformed dict>")
                k = decode(pair[0], keep_tuples, _depth + 1)
                try:
                    out[_hashable(k)] = decode(pair[1], keep_tuples, _depth + 1)
                except TypeError:
                    return Opaque("<dict with unhashable key>")
            return out
        if tag == "$s" and type(body) is list:
            try:
                items = [_hashable(decode(x, keep_tuples, _depth + 1)) for x in body]
                return set(items) if keep_tuples else frozenset(items)
            except TypeError:
                return Opaque("<set with unhashable item>")
        if tag == "$i" and type(body) is str:
            try:
                return int(body, 16)
            except ValueError:
                return Opaque("<malformed int>")
        if tag == "$r" and type(body) is str:
            return Opaque(body)
        if tag == "$r" and type(body) is list and len(body) == 2 and all(type(x) is str for x in body):
            return Opaque(body[1], body[0])
    return {k: decode(x, keep_tuples, _depth + 1) for k, x in tree.items()}


# ensure_ascii: lone surrogates and any other odd text survive the pipe as escapes. One encoder and
# decoder for every frame (json.dumps with separators builds a new encoder per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=True)
_DECODER = json.JSONDecoder()


def dumps(tree: Any) -> str:
    return _ENCODER.encode(tree)


def loads(text: str | bytes) -> Any:
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "surrogatepass")  # what json.loads does with UTF-8 bytes
    return _DECODER.decode(text)


# ----------------------------------------------------------------------------------------------------
# Framing: 4-byte big-endian length + JSON
# ----------------------------------------------------------------------------------------------------

_HDR = struct.Struct(">I")


def frame(obj: Any) -> bytes:
    data = dumps(obj).encode("ascii")
    return _HDR.pack(len(data)) + data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class FrameTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"frame of {size} bytes")
        self.size = size


class FrameReader:
    """Incremental frame parser. ``max_frame`` bounds memory when the writer is untrusted."""

    def __init__(self, max_frame: int = 1 << 31) -> None:
        self.buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[Any]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = _HDR.unpack_from(self.buf, 0)
            if n > self.max_frame:
                raise FrameTooLarge(n)
            if len(self.buf) < 4 + n:
                break
            payload = bytes(self.buf[4:4 + n])
            del self.buf[:4 + n]
            out.append(loads(payload))
        return out


# ----------------------------------------------------------------------------------------------------
# Linux bits via ctypes (namespaces, mounts, prctl)
# ----------------------------------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 38, 36

_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        # Not ctypes.util.find_library: it imports subprocess and so threading, whose at-fork hook
        # would cost every child of the server ~0.5 ms. The interpreter itself links the C library.
        try:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def unshare(flags: int) -> None:
    _check(libc().unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def prctl(option: int, arg: int = 0) -> None:
    _check(libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0)), "prctl")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty effective/permitted/inheritable capability sets of this process (capset, version 3)."""
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    _check(libc().capset(ctypes.byref(hdr), data), "capset")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(libc().mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                        ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


CLONE_NEWIPC = 0x08000000
CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | 0x80
MNT_DETACH = 2
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


# ----------------------------------------------------------------------------------------------------
# Syscall filter (seccomp-bpf, built by hand: no binding installs into every venv)
# ----------------------------------------------------------------------------------------------------

AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
# x86_64 numbers (asm/unistd_64.h). Denied with EPERM: kernel attack surface no solution needs, and every
# channel that is not per run (keyrings) or not covered by the namespaces (vsock via socket families).
_DENY_X86_64 = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "vhangup": 153, "modify_ldt": 154,
    "pivot_root": 155, "_sysctl": 156, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167,
    "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
    "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298, "fanotify_init": 300,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442, "quotactl_fd": 443, "statmount": 457,
    "listmount": 458, "open_tree_attr": 467, "chroot": 161,
}
_NR_SOCKET, _NR_SOCKETPAIR, _NR_CLONE, _NR_CLONE3 = 41, 53, 56, 435


def seccomp_program(arch: str | None = None) -> bytes | None:
    """The BPF filter of the server and so of every child (None: architecture not supported). In order: any other ABI
    (i386 ``int 0x80``, x32) kills the process; the syscalls in ``_DENY_X86_64`` fail with EPERM;
    ``socket``/``socketpair`` only for AF_UNIX, AF_INET, AF_INET6 (AF_VSOCK, netlink, packet, ... get
    EAFNOSUPPORT); ``clone`` with any CLONE_NEW* flag fails with EPERM; ``unshare`` and ``setns`` only
    for PID namespaces (the server's per-run namespace; they need CAP_SYS_ADMIN, which programs lack);
    ``clone3`` (flags out of reach of a filter) fails with ENOSYS, so libc falls back to ``clone``;
    everything else is allowed."""
    arch = arch or os.uname().machine
    if arch != "x86_64":
        return None
    LD, JEQ, JGE, JSET, RET, JA = 0x20, 0x15, 0x35, 0x45, 0x06, 0x05
    prog: list[tuple[int, int, int, int]] = []
    fixups: list[tuple[int, str, str]] = []  # (index, true label, false label)

    def ins(code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        if isinstance(jt, str) or isinstance(jf, str):
            fixups.append((len(prog), str(jt) if isinstance(jt, str) else "", str(jf) if isinstance(jf, str) else ""))
        prog.append((code, jt if isinstance(jt, int) else 0, jf if isinstance(jf, int) else 0, k))

    labels: dict[str, int] = {}
    ins(LD, 4)                                   # seccomp_data.arch
    ins(JEQ, AUDIT_ARCH_X86_64, 1, 0)
    ins(RET, _RET_KILL_PROCESS)
    ins(LD, 0)                                   # seccomp_data.nr
    ins(JGE, 0x40000000, "eperm", 0)             # x32 ABI
    ins(JEQ, _DENY_X86_64["unshare"], "unshare", 0)
    ins(JEQ, _DENY_X86_64["setns"], "setns", 0)
    for nr in sorted(set(_DENY_X86_64.values()) - {_DENY_X86_64["unshare"], _DENY_X86_64["setns"]}):
        ins(JEQ, nr, "eperm", 0)
    ins(JEQ, _NR_CLONE3, "enosys", 0)
    ins(JEQ, _NR_SOCKET, "family", 0)
    ins(JEQ, _NR_SOCKETPAIR, "family", 0)
    ins(JEQ, _NR_CLONE, "clone", 0)
    ins(RET, _RET_ALLOW)
    labels["family"] = len(prog)
    ins(LD, 16)                                  # low 32 bits of args[0]: the address family
    for fam in (AF_UNIX, AF_INET, AF_INET6):
        ins(JEQ, fam, "allow", 0)
    ins(RET, _RET_ERRNO | errno.EAFNOSUPPORT)
    labels["clone"] = len(prog)
    ins(LD, 16)                                  # clone flags (x86_64: first argument)
    ins(JSET, CLONE_NEW_ANY, "eperm", "allow")
    # The server itself runs under this filter (children inherit it: no per-fork cost) and needs exactly
    # unshare(CLONE_NEWPID) and setns(fd, CLONE_NEWPID) for the per-run PID namespace. Both need
    # CAP_SYS_ADMIN, which programs never have; every other flag or namespace type is denied.
    labels["unshare"] = len(prog)
    ins(LD, 20)                                  # high 32 bits of args[0]
    ins(JEQ, 0, 0, "eperm")
    ins(LD, 16)
    ins(JEQ, CLONE_NEWPID, "allow", "eperm")
    labels["setns"] = len(prog)
    ins(LD, 24)                                  # args[1]: the namespace type
    ins(JEQ, CLONE_NEWPID, "allow", "eperm")
    labels["allow"] = len(prog)
    ins(RET, _RET_ALLOW)
    labels["eperm"] = len(prog)
    ins(RET, _RET_ERRNO | errno.EPERM)
    labels["enosys"] = len(prog)
    ins(RET, _RET_ERRNO | errno.ENOSYS)
    for i, jt, jf in fixups:
        code, t, f, k = prog[i]
        if jt:
            t = labels[jt] - i - 1
        if jf:
            f = labels[jf] - i - 1
        if not (0 <= t < 256 and 0 <= f < 256):
            raise ValueError("seccomp jump out of range")
        prog[i] = (code, t, f, k)
    return b"".join(struct.pack("=HBBI", *p) for p in prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompFilter:
    """A filter the server installs on itself once set up (every child inherits it: installing it per child
    cost ~0.5 ms of CPU, the kernel JIT-compiles each copy)."""

    def __init__(self, program: bytes) -> None:
        self.buf = ctypes.create_string_buffer(program, len(program))
        self.fprog = _SockFprog(len(program) // 8, ctypes.addressof(self.buf))

    def install(self) -> None:
        _check(libc().prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                            ctypes.c_void_p(ctypes.addressof(self.fprog)), ctypes.c_ulong(0), ctypes.c_ulong(0)),
               "seccomp")


# ----------------------------------------------------------------------------------------------------
# Per-run memory: a memory cgroup of the server's own (v2 memory.max, else v1 memory.limit_in_bytes)
# ----------------------------------------------------------------------------------------------------

class MemoryCgroup:
    """The server moves itself into a fresh memory cgroup, so every process a program starts is in it
    without a per-fork cost, and the sum of their memory (RSS, page cache, tmpfs files, SysV shm, kernel
    memory) is limited per run (a server runs one program at a time). Files are opened before the chroot."""

    def __init__(self, path: str, version: int) -> None:
        self.path, self.version = path, version
        f = {2: ("memory.max", "memory.events", "memory.current"),
             1: ("memory.limit_in_bytes", "memory.oom_control", "memory.usage_in_bytes")}[version]
        self.limit_file, self.events_file, self.usage_file = (os.path.join(path, n) for n in f)
        self.events_fd = os.open(self.events_file, os.O_RDONLY)
        self.usage_fd = os.open(self.usage_file, os.O_RDONLY)

    @staticmethod
    def _locate() -> list[tuple[str, int]]:
        out = []
        try:
            lines = open("/proc/self/cgroup").read().splitlines()
        except OSError:
            return out
        for line in lines:
            hid, ctrls, rel = (line.split(":", 2) + ["", ""])[:3]
            if hid == "0" and ctrls == "":
                for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                    base = root + rel
                    try:
                        if "memory" in open(os.path.join(root, "cgroup.controllers")).read().split():
                            out.insert(0, (base.rstrip("/"), 2))
                            break
                    except OSError:
                        continue
            elif "memory" in ctrls.split(","):
                out.append(((f"/sys/fs/cgroup/{ctrls}" + rel).rstrip("/"), 1))
        return out

    @classmethod
    def create(cls, limit_bytes: int, notes: list[str]) -> "MemoryCgroup | None":
        errors = []
        for base, version in cls._locate():
            name = f"mars2-sandbox-{os.getpid()}"
            path = os.path.join(base, name)
            try:
                cls._remove_stale(base)
                if version == 2:
                    try:  # the parent must hand the memory controller down (fails if it holds processes)
                        with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
                            f.write("+memory")
                    except OSError:
                        pass
                os.mkdir(path, 0o755)
                try:
                    cg = cls(path, version)
                    cg.set_limit(limit_bytes)
                    with open(os.path.join(path, "cgroup.procs"), "w") as f:
                        f.write(str(os.getpid()))
                    return cg
                except OSError:
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
                    raise
            except OSError as e:
                errors.append(f"cgroup v{version} at {base}: {e.strerror or e}")
        notes.append("no memory cgroup (" + ("; ".join(errors) or "no memory controller mounted")
                     + "): memory is limited per process (RLIMIT_AS), a run may use max_processes times that")
        return None

    @staticmethod
    def _remove_stale(base: str) -> None:
        """Cgroups of servers that were killed (their parent usually removes them; this is the net)."""
        try:
            names = os.listdir(base)
        except OSError:
            return
        for n in names:
            if n.startswith("mars2-sandbox-") and n[14:].isdigit() and not os.path.exists(f"/proc/{n[14:]}"):
                try:
                    os.rmdir(os.path.join(base, n))
                except OSError:
                    pass

    def set_limit(self, limit_bytes: int) -> None:
        with open(self.limit_file, "w") as f:
            f.write(str(limit_bytes) if limit_bytes else "max" if self.version == 2 else "-1")
        if self.version == 2:
            try:  # swap would let a run go past the limit
                with open(os.path.join(self.path, "memory.swap.max"), "w") as f:
                    f.write("0")
            except OSError:
                pass
        else:
            try:
                with open(os.path.join(self.path, "memory.memsw.limit_in_bytes"), "w") as f:
                    f.write(str(limit_bytes) if limit_bytes else "-1")
            except OSError:
                pass

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this cgroup for exceeding the limit (ever)."""
        try:
            text = os.pread(self.events_fd, 4096, 0).decode()
        except OSError:
            return 0
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill" and v.strip().isdigit():
                return int(v)
        return 0

    def usage(self) -> int:
        try:
            return int(os.pread(self.usage_fd, 64, 0).split()[0])
        except (OSError, ValueError, IndexError):
            return -1


# ----------------------------------------------------------------------------------------------------
# IPC objects (SysV shm / msg / sem, POSIX mqueues) of our private IPC namespace, removed after every run
# ----------------------------------------------------------------------------------------------------

_IPC_RMID = 0
_SYSVIPC = (("shm", "shmctl"), ("msg", "msgctl"), ("sem", "semctl"))


def sysv_ids(kind: str) -> list[int]:
    """Ids of the SysV objects of one kind in the caller's IPC namespace (/proc/sysvipc/<kind>)."""
    try:
        with open(f"/proc/sysvipc/{kind}") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    ids = []
    for line in lines:
        parts = line.split()
        if len(parts) > 1 and parts[1].lstrip("-").isdigit():
            ids.append(int(parts[1]))
    return ids


_SHM_INFO, _MSG_INFO, _SEM_INFO = 14, 12, 19
_INFO_BUF: Any = None


def sysv_counts() -> dict[str, int | None]:
    """How many SysV objects of each kind exist in this IPC namespace (shmctl SHM_INFO ``used_ids``,
    msgctl MSG_INFO ``msgpool``, semctl SEM_INFO ``semusz``): one syscall each instead of reading
    /proc/sysvipc after every run. None where the call failed (then /proc is read)."""
    global _INFO_BUF
    if _INFO_BUF is None:
        _INFO_BUF = (ctypes.c_int * 32)()
    buf, lc = _INFO_BUF, libc()
    out: dict[str, int | None] = {}
    for kind, call, field in (("shm", lambda: lc.shmctl(0, _SHM_INFO, buf), 0),
                              ("msg", lambda: lc.msgctl(0, _MSG_INFO, buf), 0),
                              ("sem", lambda: lc.semctl(0, 0, _SEM_INFO, buf), 7)):
        ctypes.memset(buf, 0, ctypes.sizeof(buf))
        out[kind] = buf[field] if call() >= 0 else None
    return out


def remove_ipc_objects(mqueue_dir: str | None) -> int:
    """Remove every SysV object and POSIX message queue of this IPC namespace; returns how many."""
    n = 0
    try:
        counts = sysv_counts()
    except (OSError, AttributeError):
        counts = {}
    for kind, fn in _SYSVIPC:
        if counts.get(kind) == 0:
            continue
        for i in sysv_ids(kind):
            if kind == "sem":
                rc = libc().semctl(ctypes.c_int(i), ctypes.c_int(0), ctypes.c_int(_IPC_RMID))
            else:
                rc = getattr(libc(), fn)(ctypes.c_int(i), ctypes.c_int(_IPC_RMID), ctypes.c_void_p(None))
            n += rc == 0
    if mqueue_dir:
        try:
            for name in os.listdir(mqueue_dir):
                try:
                    os.unlink(os.path.join(mqueue_dir, name))
                    n += 1
                except OSError:
                    pass
        except OSError:
            pass
    return n


# ----------------------------------------------------------------------------------------------------
# Removing what a program left behind, whatever its shape (no recursion, no path length limit)
# ----------------------------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def remove_tree(path: str, max_steps: int = 1_000_000) -> bool:
    """Delete ``path`` and everything below it: depth-first with one open directory at a time (``openat``
    down, ``..`` back up) and a stack of names, so neither Python's recursion limit nor PATH_MAX (a
    2,500-deep tree) matters. Never follows symlinks, never raises; False if something stayed."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return True
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return not os.path.lexists(path)
    names: list[str] = []
    stuck: set[tuple[int, int]] = set()  # directories we could not empty: skipped from then on
    steps = 0
    try:
        while steps < max_steps:
            steps += 1
            sub = None
            try:
                with os.scandir(fd) as it:
                    for e in it:
                        steps += 1
                        try:
                            if e.is_dir(follow_symlinks=False):
                                if (e.inode(), os.fstat(fd).st_dev) not in stuck:
                                    sub = e.name
                                    break
                            else:
                                os.unlink(e.name, dir_fd=fd)
                        except OSError:
                            pass
            except OSError:
                pass
            if sub is not None:
                try:
                    nfd = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    try:
                        os.chmod(sub, 0o700, dir_fd=fd, follow_symlinks=False)
                        nfd = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                    except (OSError, NotImplementedError):
                        try:
                            stuck.add((os.stat(sub, dir_fd=fd, follow_symlinks=False).st_ino, os.fstat(fd).st_dev))
                        except OSError:
                            pass
                        continue
                os.close(fd)
                fd = nfd
                names.append(sub)
                continue
            if not names:
                break
            pfd = os.open("..", _DIR_FLAGS, dir_fd=fd)
            me = os.fstat(fd)
            os.close(fd)
            fd = pfd
            name = names.pop()
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                stuck.add((me.st_ino, me.st_dev))
    except OSError:
        pass
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass
    return not os.path.lexists(path)


# ----------------------------------------------------------------------------------------------------
# Child side: runs the untrusted program
# ----------------------------------------------------------------------------------------------------

PROGRAM_FILENAME = "<string>"  # what tracebacks show (method.md §6: "trimmed traceback")
PRELUDE_FILENAME = "<prelude>"
_TB_CHARS = 3000
_CORRUPT = "RuntimeError: the program corrupted the result channel"


def _format_exc(e: BaseException) -> str:
    """Traceback without the harness's own frames (they are noise to the model), trimmed from the top."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != PROGRAM_FILENAME:
        tb = tb.tb_next
    try:
        if isinstance(e, SyntaxError):
            text = "".join(traceback.format_exception_only(type(e), e))
        else:
            text = "".join(traceback.format_exception(type(e), e, tb))
    except BaseException:  # noqa: BLE001 - a hostile __str__ must not break the report
        text = f"{type(e).__name__}: <unprintable>"
    return text[-_TB_CHARS:]


class _Child:
    """State of one forked child; everything it needs was in the server's memory at fork time."""

    def __init__(self, req: dict, proto_fd: int) -> None:
        self.req = req
        self.proto_fd = proto_fd
        self.prelude: Any = None

    def send(self, obj: dict) -> None:
        try:
            write_all(self.proto_fd, frame(obj))
        except OSError:
            os._exit(0)  # the server stopped listening (killed run); nothing left to do

    def compile(self) -> Any:
        """The program's code object, preceded by the problem's prelude (LiveCodeBench prepends its block
        of imports as ``prelude + "\n\n" + program``). The prelude is compiled on its own and run first
        in the same namespace, which is the same thing except that line numbers in tracebacks stay those
        of the model's program (and a ``from __future__`` import there still works)."""
        try:
            code = builtins.compile(self.req["program"], PROGRAM_FILENAME, "exec", dont_inherit=True)
            prelude = self.req.get("prelude") or ""
            self.prelude = builtins.compile(prelude, PRELUDE_FILENAME, "exec", dont_inherit=True) if prelude else None
            return code
        except BaseException as e:  # noqa: BLE001 - SyntaxError, MemoryError, RecursionError, ValueError
            self.send({"k": "load", "e": _format_exc(e), "mem": isinstance(e, MemoryError)})
            os._exit(0)

    def exec_program(self, code: Any, ns: dict) -> None:
        if self.prelude is not None:
            exec(self.prelude, ns)
        exec(code, ns)

    # functional: load once, then call the entry point for every remaining test ------------------------
    def run_functional(self, idxs: list[int]) -> None:
        code = self.compile()
        mod = types.ModuleType("solution")
        sys.modules["solution"] = mod
        try:
            self.exec_program(code, mod.__dict__)
        except BaseException as e:  # noqa: BLE001 - includes SystemExit at top level
            self.send({"k": "load", "e": _format_exc(e), "mem": isinstance(e, MemoryError)})
            os._exit(0)
        fn = self._entry(mod.__dict__)
        self.send({"k": "ready"})
        tests, caps = self.req["tests"], self.req["caps"]
        for i in idxs:
            try:
                args = decode(tests[i], keep_tuples=True)
                if type(args) is not list:
                    args = [args]
                result = fn(*args)
            except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt are runtime errors too
                self.send({"i": i, "k": "err", "e": _format_exc(e), "mem": isinstance(e, MemoryError)})
                continue
            try:
                text = dumps(encode(result))
            except BaseException as e:  # noqa: BLE001 - recursion, hostile tolist/__repr__, MemoryError
                self.send({"i": i, "k": "err", "e": f"result could not be serialised: {type(e).__name__}: {e}"[:500],
                           "mem": isinstance(e, MemoryError)})
                continue
            if len(text) > caps[i]:
                self.send({"i": i, "k": "olimit", "n": len(text)})
                continue
            self.send({"i": i, "k": "ok", "v": text})
        os._exit(0)

    def _entry(self, ns: dict) -> Callable[..., Any]:
        name = self.req["entry"]
        cls_name = self.req.get("class_name")
        if not cls_name and name not in ns and isinstance(ns.get("Solution"), type) \
                and hasattr(ns["Solution"], name):
            cls_name = "Solution"  # LeetCode style without metadata
        if cls_name:
            cls = ns.get(cls_name)
            if not isinstance(cls, type) or not hasattr(cls, name):
                self._fail_load(f"NameError: class {cls_name!r} with method {name!r} is not defined")
            return lambda *args: getattr(cls(), name)(*args)
        fn = ns.get(name)
        if fn is None:
            self._fail_load(f"NameError: name {name!r} is not defined")
        if not callable(fn):
            self._fail_load(f"TypeError: {name!r} is not callable")
        return fn  # type: ignore[return-value]

    def _fail_load(self, msg: str) -> None:
        self.send({"k": "load", "e": msg, "mem": False})
        os._exit(0)

    # stdin: the program runs as __main__ once per test, with fd 0 / sys.stdin holding that test's input ----
    def run_stdin(self, idxs: list[int]) -> None:
        """Tests run one after another in this process (fresh ``__main__`` module, stdin and stdout objects
        each time); after each test we wait for the server's ack (fd 4) so that the bytes on the shared
        stdout pipe can be attributed to the right test."""
        code = self.compile()
        self.send({"k": "ready"})
        tests = self.req["tests"]
        for n, i in enumerate(idxs):
            if n and not os.read(4, 1):
                os._exit(0)
            try:
                fd = os.memfd_create("stdin", 0)
                write_all(fd, str(tests[i]).encode("utf-8", "surrogatepass"))
                os.lseek(fd, 0, os.SEEK_SET)
                os.dup2(fd, 0)
                os.close(fd)
                sys.stdin = sys.__stdin__ = open(0, "r", encoding="utf-8", closefd=False)
                out = open(1, "w", encoding="utf-8", closefd=False)
                sys.stdout = sys.__stdout__ = out
                sys.argv = ["solution.py"]
            except BaseException as e:  # noqa: BLE001 - the previous test broke the process
                self.send({"i": i, "k": "err", "e": f"RuntimeError: cannot start the test ({type(e).__name__})",
                           "mem": isinstance(e, MemoryError)})
                os._exit(1)
            self.send({"i": i, **self._main_once(code, out)})
        os._exit(0)

    def _main_once(self, code: Any, out: Any) -> dict:
        """Run the program as a script; returns the result frame body (without the test index)."""
        mod = types.ModuleType("__main__")
        mod.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = mod
        res: dict = {"k": "end"}
        try:
            self.exec_program(code, mod.__dict__)
        except SystemExit as e:
            if e.code is not None and e.code != 0:
                text = str(e.code) if type(e.code) is int else str(e.code)[:200]
                res = {"k": "err", "e": f"SystemExit: {text}", "mem": False}
        except BaseException as e:  # noqa: BLE001
            res = {"k": "err", "e": _format_exc(e), "mem": isinstance(e, MemoryError)}
        # What a normal interpreter exit does: wait for non-daemon threads, run atexit, flush stdout.
        try:
            # threading is not imported by the server (its at-fork hook would cost every child ~0.5 ms):
            # if the program did not import it, it has no threads to wait for (as at interpreter exit)
            threading = sys.modules.get("threading")
            if threading is not None:
                main = threading.main_thread()
                for t in threading.enumerate():
                    if t is not main and not t.daemon:
                        t.join()
            atexit._run_exitfuncs()
        except BaseException as e:  # noqa: BLE001
            if res["k"] == "end":
                res = {"k": "err", "e": _format_exc(e), "mem": isinstance(e, MemoryError)}
        for stream in (sys.stdout, out):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - odd replacements of sys.stdout
                pass
        try:
            mod.__dict__.clear()  # objects of this run die now (their finalizers may still write output)
            out.flush()
        except BaseException:  # noqa: BLE001
            pass
        return res


# ----------------------------------------------------------------------------------------------------
# The fork server
# ----------------------------------------------------------------------------------------------------

# Common imports paid once in the server instead of in every child.
_PRELOAD = ("collections", "itertools", "functools", "heapq", "bisect", "string", "re", "random", "typing",
            "fractions", "decimal", "statistics", "copy", "operator", "array", "datetime", "dataclasses",
            "collections.abc", "enum", "io", "json", "math")



def preload() -> None:
    """Import :data:`_PRELOAD` in the server. ``random`` registers an at-fork hook (``Random.seed`` in
    Python) that would cost every child ~0.15 ms of page faults; it is imported without the hook and
    each child reseeds through the C method instead (:func:`reseed_random`), with the same result: a
    fresh seed from the OS per child. The server never imports ``threading`` (its at-fork hook costs
    ~0.5 ms per child): programs that use it import it themselves."""
    register = os.register_at_fork
    os.register_at_fork = lambda **kw: None  # type: ignore[assignment]
    try:
        import random  # noqa: F401 - the only preloaded module with an at-fork hook
    finally:
        os.register_at_fork = register
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass


def _release_free_memory() -> None:
    """Give the C heap's free pages back to the system (``malloc_trim``): start-up leaves ~3 MB of them
    resident here, which every fork would map into the child and every exit unmap again."""
    try:
        libc().malloc_trim(ctypes.c_size_t(0))
    except (AttributeError, OSError):
        pass


def reseed_random() -> None:
    """In a child: what ``random``'s at-fork hook does (a fresh seed from os.urandom), in C."""
    inst = getattr(sys.modules.get("random"), "_inst", None)
    base = sys.modules.get("_random")
    if inst is not None and base is not None:
        base.Random.seed(inst, None)  # the C method: os.urandom -> Mersenne Twister state
        inst.gauss_next = None


_CGROUP_SLACK_MB = 32  # the run's memory cgroup allows memory_mb plus this (server buffers, kernel objects)
_WRITABLE_CANDIDATES = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/run/shm", "/dev/mqueue")


def _world_writable_dirs() -> list[str]:
    out = []
    for d in _WRITABLE_CANDIDATES:
        try:
            st = os.lstat(d)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002:
            out.append(d)
    return out


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _count_processes(uid: int) -> int:
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                pass
    return n


def _read(fd: int) -> bytes | None:
    """One read; b"" at EOF (or a broken fd), None when nothing is there (non-blocking fds)."""
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class _Proc:
    """A running child as the server sees it."""

    def __init__(self, pid: int, proto_r: int, out_r: int | None, ack_w: int | None) -> None:
        self.pid = pid
        self.proto_r = proto_r
        self.out_r = out_r
        self.ack_w = ack_w
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self.status: int | None = None  # raw wait status once reaped
        self.killed = False
        self.oom0 = 0  # the memory cgroup's OOM-kill count when the child started


class Server:
    def __init__(self, init: dict) -> None:
        self.cfg = init
        self.parent = FrameReader()
        self.pending: list[dict] = []
        self.parent_eof = False
        self.iso: dict[str, Any] = {"netns": False, "mountns": False, "ipcns": False, "tmpfs": [],
                                    "pidns": False, "uid": None, "seccomp": False, "memory": "rlimit_as",
                                    "notes": []}
        self.cgroup: MemoryCgroup | None = None
        self.seccomp: SeccompFilter | None = None
        self.mqueue_dir: str | None = None
        self.interp_fds: dict[str, int] = {}  # interpreter dirs opened before any tmpfs can hide them
        self.protected: set[str] = set()  # entries of the private tmpfs that cleanup must not touch
        self.rss0 = 0  # the server's resident memory after its first run
        self.uid: int | None = None
        self.pidns_fd: int | None = None
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.stopped: set[int] = set()
        self.rid = -1
        self.workdir = ""
        self.server_pid = os.getpid()
        self.req: dict = {}
        self.base_vsz = 0
        self.stdio: tuple[Any, Any, Any] = (sys.stdin, sys.stdout, sys.stderr)
        self.outbuf: list[bytes] = []
        self.n_timeouts = 0
        self.userns = False  # we created our own user namespace (unprivileged host)
        self.nproc_base = 0  # non-root: processes our uid already has (RLIMIT_NPROC counts them all)
        self.nnp = False  # no_new_privs set on the server: every child inherits it

    # -- isolation set-up (once) ----------------------------------------------------------------------
    def setup(self) -> None:
        notes = self.iso["notes"]
        want_net = self.cfg.get("network", "auto") != "off"
        root = os.geteuid() == 0
        off = set(self.cfg.get("layers_off") or ())  # benchmarks only: the cost of each layer
        if off:
            self.iso["notes"].append("layers switched off (benchmark): " + ", ".join(sorted(off)))
        if "memory_cgroup" not in off:
            self._setup_memory_cgroup()
        if root:
            if want_net:
                try:
                    unshare(CLONE_NEWNET)
                    self.iso["netns"] = True
                except OSError as e:
                    notes.append(f"network namespace unavailable ({e})")
            try:
                unshare(CLONE_NEWNS)
                self.iso["mountns"] = True
            except OSError as e:
                notes.append(f"mount namespace unavailable ({e})")
            try:
                if "ipcns" not in off:
                    unshare(CLONE_NEWIPC)
                    self.iso["ipcns"] = True
            except OSError as e:
                notes.append(f"IPC namespace unavailable ({e}): SysV/POSIX IPC objects are the host's")
        else:
            # Unprivileged: a user namespace can carry the network, mount and IPC namespaces.
            uid, gid = os.getuid(), os.getgid()
            flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | (CLONE_NEWNET if want_net else 0)
            try:
                unshare(flags)
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write(f"{uid} {uid} 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"{gid} {gid} 1")
                self.iso["mountns"] = True
                self.iso["ipcns"] = True
                self.iso["netns"] = want_net
                self.userns = True
            except OSError as e:
                notes.append(f"user namespace unavailable ({e}); no network/mount isolation")
        if self.iso["mountns"]:
            try:
                mount("none", "/", None, MS_REC | MS_PRIVATE, None)
                # a venv under /tmp must survive the private /tmp below: opened now, in our mount namespace
                for p in _interpreter_dirs():
                    try:
                        self.interp_fds[p] = os.open(p, os.O_PATH | os.O_DIRECTORY)
                    except OSError:
                        pass
                size = int(self.cfg.get("tmpfs_mb", 64))
                for d in _world_writable_dirs():
                    mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,nr_inodes=4096,mode=1777")
                    self.iso["tmpfs"].append(d)
            except OSError as e:
                notes.append(f"private tmpfs unavailable ({e})")
            try:
                self._restore_hidden_interpreter()
            except OSError as e:
                notes.append(f"interpreter directories under a private tmpfs stay hidden ({e})")
        if self.userns:
            self._enter_shared_pidns()  # before the root is built: its /proc belongs to that namespace
        if self.iso["mountns"] and self.cfg.get("minimal_root", True):
            try:
                self._build_root()
            except OSError as e:
                notes.append(f"minimal root unavailable ({e}); the host file system stays readable")
        if root and self.iso["mountns"] and not self.iso.get("root"):
            try:
                # A /proc of our own that shows a non-root uid only its own processes (hidepid): programs
                # cannot even list the host's processes or read their command lines.
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
                self.iso["proc_hidepid"] = True
            except OSError as e:
                notes.append(f"private /proc unavailable ({e})")
            try:
                self._expose_interpreter()
            except OSError as e:
                notes.append(f"could not expose the interpreter to the unprivileged uid ({e})")
        if self.iso["ipcns"]:
            self._setup_ipc()
        for fd in self.interp_fds.values():
            os.close(fd)
        self.interp_fds = {}
        if "seccomp" not in off:
            self._setup_seccomp()  # its probe forks: before the PID namespace set-up below
        if root:
            self._setup_uid()
            if "pidns" not in off:
                self._setup_pidns()
        try:
            prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of children come back to us to be reaped
        except OSError:
            pass
        self._prepare_children()
        try:  # inherited by every child (the server itself never executes a program file)
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            self.nnp = True
        except OSError:
            pass
        if self.seccomp is not None:
            try:  # last: from here on the server (and every child) runs under the filter
                self.seccomp.install()
            except OSError as e:
                self.seccomp = None
                self.iso["seccomp"] = False
                self.iso["notes"].append(f"the kernel refused the seccomp filter ({e}): no syscall filter")

    def _setup_memory_cgroup(self) -> None:
        mb = int(self.cfg.get("memory_mb") or 0)
        if not mb:
            self.iso["memory"] = "none"
            return
        limit = (mb + _CGROUP_SLACK_MB) << 20
        self.cgroup = MemoryCgroup.create(limit, self.iso["notes"])
        if self.cgroup is not None:
            self.iso.update(memory=f"cgroup{self.cgroup.version}", memory_cgroup=self.cgroup.path,
                            memory_run_mb=mb + _CGROUP_SLACK_MB)

    def _setup_ipc(self) -> None:
        """Our own IPC namespace: SysV objects and POSIX queues made by a program are invisible to the host
        and to other servers, and :func:`remove_ipc_objects` deletes them after every run."""
        try:  # segments nobody has attached die with their last user
            with open("/proc/sys/kernel/shm_rmid_forced", "w") as f:
                f.write("1")
        except OSError:
            pass
        if self.iso.get("root") == "minimal" and not os.path.exists("/dev/mqueue"):
            try:  # our own /dev (a tmpfs in the minimal root), not the host's
                os.mkdir("/dev/mqueue", 0o1777)
            except OSError:
                pass
        if self.mqueue_dir is None and self.iso["mountns"] and os.path.isdir("/dev/mqueue"):
            try:
                mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
                self.mqueue_dir = "/dev/mqueue"
            except OSError:
                pass
        if self.mqueue_dir is None:
            self.iso["notes"].append("no mqueue mount: POSIX message queues of a run are not removed after it")

    def _setup_seccomp(self) -> None:
        prog = seccomp_program()
        if prog is None:
            self.iso["notes"].append(f"no syscall filter for architecture {os.uname().machine}")
            return
        flt = SeccompFilter(prog)

        def probe() -> None:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            flt.install()
            if libc().syscall(ctypes.c_long(_DENY_X86_64["keyctl"]), ctypes.c_long(0), ctypes.c_long(-3)) != -1:
                raise OSError("filter not effective")
            if os.geteuid() == 0 and self.iso["mountns"]:
                unshare(CLONE_NEWPID)  # what the server still needs under its own filter
        if self._probe(probe):
            self.seccomp = flt
            self.iso["seccomp"] = True
        else:
            self.iso["notes"].append("the kernel refused the seccomp filter: no syscall filter")

    def _restore_hidden_interpreter(self) -> None:
        """Interpreter directories below a directory we just covered with a tmpfs (a venv in /tmp) are
        bound back, read-only, from the fds opened before (no-op for the usual locations). Cleanup after
        a run leaves their top-level entries alone."""
        paths = sorted(self.interp_fds)
        top = [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]
        for p in top:
            for d in self.iso["tmpfs"]:
                if p.startswith(d + "/"):
                    self._bind(f"/proc/self/fd/{self.interp_fds[p]}", p)
                    self.protected.add(os.path.join(d, p[len(d) + 1:].split("/")[0]))
                    self.iso.setdefault("restored", []).append(p)

    def _bind(self, src: str, dst: str, readonly: bool = True, dev: bool = False) -> None:
        if os.path.isdir(src):
            os.makedirs(dst, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
            with open(dst, "a"):
                pass
        mount(src, dst, None, MS_BIND | MS_REC, None)
        if readonly:
            mount("none", dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (0 if dev else MS_NODEV), None)

    def _build_root(self) -> None:
        """A minimal root file system for the children (like bubblewrap does it), then chroot into it:
        read-only binds of the system directories (/usr, /bin, /lib*, /etc) and of the interpreter's own
        directories at their usual paths, a few device nodes, a /proc that shows a non-root uid only its
        own processes (hidepid), and fresh tmpfs for /tmp, /var/tmp and /dev/shm. Everything else of the
        host – the project, data sets with expected outputs, home directories – does not exist in there."""
        base = "/tmp" if "/tmp" in self.iso["tmpfs"] else None
        if base is None:
            raise OSError(errno.ENOENT, "no private /tmp to build the root in")
        new = os.path.join(base, ".mars2-root")
        os.mkdir(new, 0o755)
        mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
        size = int(self.cfg.get("tmpfs_mb", 64))
        tmpfs = []
        for d in ("/tmp", "/var/tmp", "/dev/shm"):  # first: an interpreter under /tmp is bound on top below
            os.makedirs(new + d, mode=0o755, exist_ok=True)
            mount("tmpfs", new + d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,nr_inodes=4096,mode=1777")
            tmpfs.append(d)
        bound: list[str] = []
        for d in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"):
            if os.path.islink(d):
                os.symlink(os.readlink(d), new + d)
            elif os.path.isdir(d):
                self._bind(d, new + d)
                bound.append(d)
        paths = _interpreter_dirs()
        paths = [p for p in paths if p not in bound
                 and not any(p != q and p.startswith(q + "/") for q in paths + bound)]
        extra = [p for p in sorted({sys.prefix, os.path.dirname(sys.executable)})  # symlinked venv paths
                 if os.path.isdir(p) and os.path.realpath(p) != p]
        for p in paths + extra:
            if p in extra and os.path.exists(new + p):
                continue
            self._bind(p, new + p)
            for d in tmpfs:  # cleanup after a run must leave the binds in the private tmpfs alone
                if p.startswith(d + "/"):
                    self.protected.add(os.path.join(d, p[len(d) + 1:].split("/")[0]))
        os.makedirs(new + "/dev", 0o755, exist_ok=True)
        for n in ("null", "zero", "full", "random", "urandom"):
            if os.path.exists("/dev/" + n):
                self._bind("/dev/" + n, new + "/dev/" + n, readonly=False, dev=True)
        for n, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                          ("stderr", "/proc/self/fd/2")):
            os.symlink(target, f"{new}/dev/{n}")
        os.mkdir(new + "/proc", 0o555)
        mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        os.chroot(new)
        os.chdir("/")
        self.iso.update(root="minimal", tmpfs=tmpfs, proc_hidepid=True, exposed=paths)

    def _enter_shared_pidns(self) -> None:
        """Unprivileged host: children run as the caller's uid, so they must not even see the caller's
        processes (same uid could read /proc/<pid>/mem). One PID namespace for the whole server: we fork,
        the child becomes its PID 1 with a fresh /proc and carries on as the server; the original process
        only waits. (Per-run namespaces, as under root, would need CAP_SYS_ADMIN in the host namespace.)"""
        try:
            unshare(CLONE_NEWPID)
        except OSError as e:
            self.iso["notes"].append(f"pid namespace unavailable ({e}); programs can see our processes")
            return
        pid = os.fork()
        if pid:
            while True:
                try:
                    _, st = os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
            os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)
        self.server_pid = os.getpid()
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV, None)
            self.iso["pidns"] = "shared"
        except OSError as e:
            self.iso["notes"].append(f"could not mount a private /proc ({e})")

    def _expose_interpreter(self) -> None:
        """The unprivileged uid must be able to import the standard library and site-packages, which may
        live below a directory others cannot enter (here: /root/.pyenv under /root, mode 0700). In our
        private mount namespace, such a directory is replaced by a tmpfs holding read-only bind mounts of
        exactly the interpreter's directories (the rest of it stays invisible)."""
        paths = _interpreter_dirs()
        paths = [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]
        blocked: dict[str, list[str]] = {}
        for p in paths:
            parts = p.strip("/").split("/")
            for k in range(1, len(parts) + 1):
                anc = "/" + "/".join(parts[:k])
                if not os.stat(anc).st_mode & 0o001:
                    blocked.setdefault(anc, []).append(p)
                    break
        for top, inner in sorted(blocked.items()):
            fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in inner]
            try:
                mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
                for p, fd in zip(inner, fds):
                    os.makedirs(p, mode=0o755, exist_ok=True)
                    mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC, None)
                    mount("none", p, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
            finally:
                for fd in fds:
                    os.close(fd)
            self.iso.setdefault("exposed", []).extend(inner)

    def _prepare_children(self) -> None:
        """Process state every child inherits, set once here instead of after every fork: a scrubbed
        environment (HOME/TMPDIR are set per run), SIGXFSZ ignored (an oversized write raises instead of
        killing), no atexit handlers of ours, no int-string digit limit, and stdio objects for fds 0-2
        (unused by the server, whose own channel is raw fds 0/1)."""
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "TMPDIR": "/tmp",
                           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
                           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        atexit._clear()
        try:
            sys.set_int_max_str_digits(0)
        except AttributeError:
            pass
        self.stdio = (open(0, "r", encoding="utf-8", closefd=False), open(1, "w", encoding="utf-8", closefd=False),
                      open(2, "w", encoding="utf-8", closefd=False))

    def _probe(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` in a forked child; True if it exits 0."""
        pid = os.fork()
        if pid == 0:
            try:
                fn()
                os._exit(0)
            except BaseException:  # noqa: BLE001
                os._exit(1)
        _, st = os.waitpid(pid, 0)
        return os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0

    def _setup_uid(self) -> None:
        # A uid of our own (not shared with other servers) lets RLIMIT_NPROC count only our children and
        # makes a kill(-1) sweep as that uid safe.
        uid = 2_000_000 + os.getpid()

        def drop() -> None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if os.getuid() != uid:
                raise OSError("uid unchanged")
        if self._probe(drop):
            self.uid = uid
        elif self._probe(lambda: (os.setgroups([]), os.setresgid(65534, 65534, 65534),
                                  os.setresuid(65534, 65534, 65534))):
            self.uid = 65534
            self.iso["notes"].append("private uid unavailable; shared uid 65534 (no kill sweep)")
        else:
            self.iso["notes"].append("cannot drop privileges; children run as root")
        self.iso["uid"] = self.uid

    def _setup_pidns(self) -> None:
        def is_init() -> None:
            if os.getpid() != 1:
                raise OSError("not PID 1")
        ok = False
        try:
            self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
            ok = True
            for _ in range(2):  # twice: the per-run re-entry must work, not only the first unshare
                self._enter_new_pidns()
                ok = ok and self._probe(is_init)
        except OSError as e:
            ok = False
            self.iso["notes"].append(f"pid namespace unavailable ({e})")
        if not ok and self.pidns_fd is not None:
            try:
                setns(self.pidns_fd, CLONE_NEWPID)
            except OSError:
                pass
            os.close(self.pidns_fd)
            self.pidns_fd = None
        self.iso["pidns"] = ok

    def _enter_new_pidns(self) -> None:
        # The next fork becomes PID 1 of a fresh PID namespace; killing it kills everything inside.
        # setns back to our own namespace first: unshare(CLONE_NEWPID) may be repeated only from there.
        assert self.pidns_fd is not None
        setns(self.pidns_fd, CLONE_NEWPID)
        unshare(CLONE_NEWPID)

    # -- parent channel ---------------------------------------------------------------------------------
    def send(self, obj: dict) -> None:
        # with the buffered results in one write: the parent wakes up once per run, not twice
        self.outbuf.append(frame(obj))
        self.flush()

    def _read_parent(self) -> None:
        try:
            data = os.read(0, 1 << 20)
        except OSError:
            data = b""
        if not data:
            self.parent_eof = True
            return
        for msg in self.parent.feed(data):
            if msg.get("op") == "stop":
                if msg.get("id") == self.rid:
                    self.stopped.add(int(msg.get("group", 0)))
            else:
                self.pending.append(msg)

    def next_request(self) -> dict | None:
        while not self.pending:
            if self.parent_eof:
                return None
            self._read_parent()
        return self.pending.pop(0)

    def serve(self) -> None:
        while True:
            req = self.next_request()
            if req is None or req.get("op") == "exit":
                return
            if req.get("op") == "ping":
                self.send({"op": "pong"})
                continue
            if req.get("op") == "run":
                self.run(req)

    # -- one program run --------------------------------------------------------------------------------
    def run(self, req: dict) -> None:
        self.req = req
        self.rid = req["id"]
        self.stopped = set()
        if self.uid is None and os.geteuid() != 0 and not self.userns:
            self.nproc_base = _count_processes(os.getuid())
        self._make_workdir()
        os.environ["HOME"] = os.environ["TMPDIR"] = self.workdir
        try:
            with open("/proc/self/statm") as f:
                self.base_vsz = int(f.read().split()[0]) * resource.getpagesize()
        except (OSError, ValueError, IndexError):
            self.base_vsz = 64 << 20
        try:
            self.run_tests(req)
        finally:
            self._cleanup()
        self.send({"op": "done", "id": self.rid})

    def _make_workdir(self) -> None:
        if self.iso["mountns"] and "/tmp" in self.iso["tmpfs"]:
            self.workdir = f"/tmp/run-{self.rid}"
            os.mkdir(self.workdir, 0o700)
        else:
            import tempfile  # only here: its shutil import maps zlib, bz2 and lzma (every fork copies them)

            self.workdir = tempfile.mkdtemp(prefix="mars2-sandbox-")
            tempfile.tempdir = None  # children compute theirs from TMPDIR
        if self.uid is not None:
            os.chown(self.workdir, self.uid, self.uid)

    def _cleanup(self) -> None:
        """After every run: kill what is left, remove its IPC objects and files. Must never raise (the
        server would die and the verdict be lost): each step is guarded on its own."""
        for step in (self._sweep, self._reap, self._remove_ipc, self._remove_files, self._trim_memory):
            try:
                step()
            except BaseException as e:  # noqa: BLE001 - e.g. RecursionError, MemoryError, OSError
                try:
                    sys.stderr.write(f"mars2 sandbox server: cleanup step {step.__name__} failed: {e!r}\n")
                except BaseException:  # noqa: BLE001
                    pass

    def _trim_memory(self) -> None:
        """The server shares the run's memory cgroup: what it keeps after a large request (freed but not
        returned to the system) would shrink the next program's budget. Checked with one getrusage (peak RSS) per run."""
        if self.cgroup is None:
            return
        if self.rss0 and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 <= self.rss0 + (16 << 20):
            return  # the peak never went that high (one syscall instead of reading /proc)
        rss = _resident_bytes()
        if self.rss0 == 0:
            self.rss0 = rss
        elif rss > self.rss0 + (16 << 20):
            gc.collect()
            _release_free_memory()

    def _remove_ipc(self) -> None:
        if self.iso["ipcns"]:
            remove_ipc_objects(self.mqueue_dir)

    def _remove_files(self) -> None:
        # The work dir and, with private tmpfs, everything any program left in them (any depth or shape).
        targets = [self.workdir]
        for d in self.iso["tmpfs"]:
            try:
                targets += [os.path.join(d, n) for n in os.listdir(d)]
            except OSError:
                pass
        for p in targets:
            if p in self.protected:
                continue
            try:
                os.rmdir(p)  # the common case: an empty work dir
                continue
            except OSError:
                pass
            remove_tree(p)

    def _sweep(self) -> None:
        """Without PID namespaces a program can escape its session (setsid + double fork). Two nets catch
        it: every orphan is re-parented to us (we are a child subreaper), so killing all our descendants
        until none is left gets everything; and a private uid allows a kill(-1) as that uid."""
        if self.pidns_fd is not None:
            return
        self._kill_descendants()
        if self.uid is None or self.uid == 65534:
            return
        uid = self.uid
        pid = os.fork()
        if pid == 0:
            try:
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)  # every process of that uid except ourselves
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        self._kill_descendants()

    def _kill_descendants(self) -> None:
        me = os.getpid()
        for _ in range(10_000):  # bounded: RLIMIT_NPROC bounds how many can be created meanwhile
            kids: list[int] = []
            try:
                for tid in os.listdir(f"/proc/{me}/task"):
                    with open(f"/proc/{me}/task/{tid}/children") as f:
                        kids += [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                return
            if not kids:
                return
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            for pid in kids:
                try:
                    os.waitpid(pid, 0)  # their own children are re-parented to us for the next round
                except ChildProcessError:
                    pass

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def spawn(self, target: Callable[[_Child], None], capture: bool, n_tests: int) -> _Proc:
        """Fork a child (PID 1 of a fresh PID namespace when available) that runs ``target``. Everything the
        child needs is computed here, before the fork: every page the child writes is copied (~2 us a
        fault on this VM), while the server touches the same objects anyway."""
        proto_r, proto_w = os.pipe()
        out_r, out_w = os.pipe() if capture else (None, None)
        ack_r, ack_w = os.pipe() if capture else (None, None)
        fds = [self.devnull, out_w if out_w is not None else self.devnull, self.devnull, proto_w]
        if ack_r is not None:
            fds.append(ack_r)
        limits = self._limits(n_tests)
        child = _Child(self.req, 3)
        if self.pidns_fd is not None:
            self._enter_new_pidns()
        oom0 = self.cgroup.oom_kills() if self.cgroup is not None else 0
        pid = os.fork()
        if pid == 0:  # ------------------------------------------------------------------- child
            try:
                self._child_setup(fds, limits)
                target(child)
            except BaseException:  # noqa: BLE001
                pass
            os._exit(70)
        for fd in (proto_w, out_w, ack_r):
            if fd is not None:
                os.close(fd)
        if out_r is not None:
            os.set_blocking(out_r, False)
        if ack_w is not None:
            os.set_blocking(ack_w, False)  # a child that never reads its acks must not block us
        proc = _Proc(pid, proto_r, out_r, ack_w)
        if self.cgroup is not None:
            proc.oom0 = oom0
        return proc

    def _limits(self, n_tests: int) -> list[tuple[int, int, int]]:
        """The rlimits of a child that runs ``n_tests`` tests: CPU, file size, open files, no core, address
        space, processes."""
        cfg = self.cfg
        mb = 1 << 20
        timeout = float(cfg["timeout_s"])
        cpu = int(math.ceil(timeout * max(1, n_tests))) + 1
        fsize = int(cfg.get("file_size_mb", 16)) * mb
        nofile = int(cfg.get("open_files", 64))
        limits = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_FSIZE, fsize, fsize),
                  (resource.RLIMIT_NOFILE, nofile, nofile), (resource.RLIMIT_CORE, 0, 0)]
        if cfg.get("memory_mb"):
            # On top of what this process already maps (interpreter, preloaded modules, the request with
            # every test input; measured by the server per run), so the program itself gets about memory_mb.
            lim = int(cfg["memory_mb"]) * mb + self.base_vsz
            limits.append((resource.RLIMIT_AS, lim, lim))
        n = int(cfg.get("max_processes", 16))
        if self.uid is not None and self.uid != 65534:
            limits.append((resource.RLIMIT_NPROC, n, n))
        elif self.userns:
            # In our own user namespace, processes are counted per namespace: us, the child, its budget.
            limits.append((resource.RLIMIT_NPROC, n + 2, n + 2))
        elif self.uid is None and os.geteuid() != 0:
            # Our uid is shared with the caller: allow what already runs plus the budget (approximate).
            limits.append((resource.RLIMIT_NPROC, self.nproc_base + n, self.nproc_base + n))
        return limits

    def _child_setup(self, fds: list[int], limits: list[tuple[int, int, int]]) -> None:
        """Containment of one child, in order: own session, work dir, rlimits (computed by the server:
        :meth:`_limits`), unprivileged uid, no new privileges, death with the server, only the fds in
        ``fds`` (as 0, 1, 2, ...), scrubbed env."""
        os.setsid()
        os.chdir(self.workdir)
        setrlimit = resource.setrlimit
        for res, soft, hard in limits:
            try:
                setrlimit(res, (soft, hard))
            except (ValueError, OSError):
                pass
        if self.cgroup is not None:
            # the kernel's OOM killer must pick the program's processes, never the server (same cgroup)
            try:
                fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
                os.write(fd, b"1000")
                os.close(fd)
            except OSError:
                pass
        uid = self.uid
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        if self.userns:
            drop_capabilities()  # we hold every capability in our user namespace (e.g. umount /tmp)
        if not self.nnp:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
        if os.getppid() not in (0, self.server_pid):  # the server died before the prctl
            os._exit(0)
        # fds: 0 stdin, 1 stdout, 2 /dev/null, 3 protocol, 4 ack; nothing else survives (the parent's pipes!)
        hi = [os.dup(fd) for fd in fds]
        for target, fd in enumerate(hi):
            os.dup2(fd, target)
        os.closerange(len(fds), 1 << 20)
        # Environment, signal dispositions, atexit and the stdio objects were prepared once by the server
        # (see _prepare_children): only objects are swapped here, which keeps the fork cheap.
        sys.stdin, sys.stdout, sys.stderr = self.stdio
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = self.stdio
        reseed_random()

    # -- waiting on a child ---------------------------------------------------------------------------
    def kill(self, p: _Proc) -> None:
        if p.status is not None:
            return
        p.killed = True
        for fn in (lambda: os.kill(p.pid, signal.SIGKILL), lambda: os.killpg(p.pid, signal.SIGKILL)):
            try:
                fn()
            except OSError:
                pass

    def reap(self, p: _Proc, block: bool = True) -> bool:
        if p.status is not None:
            return True
        try:
            pid, st = os.waitpid(p.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            p.status = 0
            return True
        if pid == 0:
            return False
        p.status = st
        return True

    def close_proc(self, p: _Proc) -> None:
        self.kill(p)
        self.reap(p)
        for fd in (p.proto_r, p.out_r, p.pidfd, p.ack_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def wait_events(self, p: _Proc, deadline: float, reader: FrameReader, out: bytearray | None,
                    out_cap: int, group: int) -> tuple[str, list[dict]]:
        """Wait until a protocol frame arrives, the child exits, the deadline passes, the output cap is
        exceeded or the parent stops the current group. Returns (event, frames)."""
        fds = [0, p.proto_r]
        if p.out_r is not None:
            fds.append(p.out_r)
        if p.pidfd is not None:
            fds.append(p.pidfd)
        if self.req.get("stream"):
            self.flush()
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timeout", []
            wait = deadline - now if p.pidfd is not None else min(deadline - now, 0.005)
            try:
                ready, _, _ = select.select([fd for fd in fds if fd is not None], [], [], wait)
            except InterruptedError:
                continue
            if 0 in ready:
                self._read_parent()
                if self.parent_eof:
                    return "eof", []
                if group in self.stopped:
                    return "stop", []
            if p.out_r is not None and p.out_r in ready:
                data = _read(p.out_r)
                if data is None:
                    pass
                elif not data:
                    fds.remove(p.out_r)
                else:
                    assert out is not None
                    out += data
                    if len(out) > out_cap:
                        return "olimit", []
            if p.proto_r in ready:
                data = _read(p.proto_r)
                if data == b"":
                    fds.remove(p.proto_r)  # closed: the child is exiting; its exit is reported below
                elif data:
                    try:
                        frames = reader.feed(data)
                    except FrameTooLarge:
                        return "olimit", []
                    except ValueError:
                        return "garbage", []
                    if frames:
                        return "frames", frames
            exited = False
            if p.pidfd is not None and p.pidfd in ready:
                exited = True
            elif p.pidfd is None:
                exited = self.reap(p, block=False)
            if exited:
                return "exit", []

    def drain(self, p: _Proc, reader: FrameReader, out: bytearray | None, out_cap: int,
              deadline: float) -> list[dict]:
        """After the child exited: read what is left in its pipes (bounded by the cap and deadline)."""
        frames: list[dict] = []
        self.reap(p)
        if self.pidns_fd is None:  # other processes of the run may still hold the pipes open
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            self._sweep()
        fds = [fd for fd in (p.proto_r, p.out_r) if fd is not None]
        end = min(deadline, time.monotonic() + 1.0)
        while fds:
            wait = end - time.monotonic()
            if wait <= 0:
                break
            ready, _, _ = select.select(fds, [], [], wait)
            for fd in ready:
                data = _read(fd)
                if data is None:
                    continue
                if not data:
                    fds.remove(fd)
                elif fd == p.out_r:
                    assert out is not None
                    out += data
                    if len(out) > out_cap:
                        fds.remove(fd)
                else:
                    try:
                        frames += reader.feed(data)
                    except ValueError:
                        fds.remove(fd)
        return frames

    # -- running tests ---------------------------------------------------------------------------------
    def run_tests(self, req: dict) -> None:
        """Children run the remaining tests in order, several per child (or one each with ``isolate``);
        after a timeout or crash the child is killed and a fresh one continues with the next test."""
        groups = req["groups"]
        timeout = float(req["timeout_s"])
        todo = list(range(len(req["tests"])))
        max_timeouts = req.get("max_timeouts")
        self.n_timeouts = 0
        while True:
            todo = [i for i in todo if groups[i] not in self.stopped]
            if not todo or self.parent_eof:
                return
            if max_timeouts and self.n_timeouts >= max_timeouts:
                for i in todo:  # an endless loop costs max_timeouts × timeout, not n_tests × timeout
                    self.result(i, "timeout", e=f"Not run: {self.n_timeouts} earlier tests timed out.", skipped=True)
                return
            batch = todo[:1] if req.get("isolate") else list(todo)
            if req["mode"] == "stdin":
                target: Callable[[_Child], None] = lambda c, idxs=batch: c.run_stdin(idxs)  # noqa: E731
            else:
                target = lambda c, idxs=batch: c.run_functional(idxs)  # noqa: E731
            p = self.spawn(target, req["mode"] == "stdin", len(batch))
            try:
                todo = self._batch(req, p, todo, list(batch), timeout)
            finally:
                self.close_proc(p)

    def _batch(self, req: dict, p: _Proc, todo: list[int], batch: list[int], timeout: float) -> list[int]:
        """Drive one child through ``batch`` (a prefix of ``todo``); returns the tests still to run."""
        groups, caps = req["groups"], req["caps"]
        stdin = req["mode"] == "stdin"
        reader = FrameReader(2 * max(caps) + 65536)
        out: bytearray | None = bytearray() if stdin else None
        ready = False
        t0 = time.monotonic()
        deadline = t0 + timeout
        while batch:
            ev, frames = self.wait_events(p, deadline, reader, out, caps[batch[0]], groups[batch[0]])
            if ev == "exit":
                frames += self.drain(p, reader, out, caps[batch[0]], deadline)
            for f in frames:
                cur = batch[0]
                if not isinstance(f, dict):
                    f = {"k": None}  # valid JSON but not one of our frames: handled as corruption below
                k = f.get("k")
                if k == "ready" and not ready:
                    ready = True
                    t0 = time.monotonic()
                    deadline = t0 + timeout
                elif k == "load" and not ready:
                    kind = "memory" if f.get("mem") else "error"
                    for i in todo:
                        self.result(i, kind, e=str(f.get("e", ""))[:_TB_CHARS], load=True)
                    return []
                elif ready and f.get("i") == cur and k in ("ok", "err", "olimit", "end"):
                    if stdin:
                        assert out is not None
                        self._read_available(p, out, caps[cur])
                    now = time.monotonic()
                    self._emit(cur, k, f, now - t0, out, caps[cur])
                    batch.pop(0)
                    todo.remove(cur)
                    if out is not None:
                        out.clear()
                    t0 = now
                    deadline = now + timeout
                    if not batch or groups[batch[0]] in self.stopped:
                        return todo  # done, or the caller restarts past the stopped group
                    if stdin and not self._ack(p):
                        return todo
                else:  # out-of-order or forged frame: the program wrote to our channel
                    self.result(cur, "error", e=_CORRUPT, t=time.monotonic() - t0)
                    todo.remove(cur)
                    return todo
            if ev == "frames":
                continue
            if ev in ("stop", "eof"):
                return todo
            # exit / timeout / garbage / olimit with the current test unanswered
            cur = batch[0]
            kind, err = self._crash(p, ev, timeout, loading=not ready)
            if not ready:
                for i in todo:
                    self.result(i, kind, e=err, load=True)
                return []
            dt = time.monotonic() - t0
            st = p.status
            if stdin and ev == "exit" and st is not None and os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0:
                assert out is not None  # os._exit(0) mid-script: a judge would compare what was printed
                self._emit(cur, "end", {}, dt, out, caps[cur])
            else:
                self.result(cur, kind, e=err, t=dt, **({"out": self._text(out, caps[cur])} if out is not None else {}))
            todo.remove(cur)
            return todo
        return todo

    def _emit(self, i: int, k: str, f: dict, dt: float, out: bytearray | None, cap: int) -> None:
        if out is not None and len(out) > cap:
            self.result(i, "olimit", e="Output limit exceeded.", t=dt, out=self._text(out, 2000))
            return
        extra = {"out": self._text(out, cap)} if out is not None else {}
        if k in ("ok", "end"):
            self.result(i, "ok", t=dt, **({"v": str(f.get("v", ""))} if k == "ok" else {}), **extra)
        elif k == "olimit":
            self.result(i, "olimit", e="Output limit exceeded.", t=dt)
        else:
            self.result(i, "memory" if f.get("mem") else "error", e=str(f.get("e", ""))[:_TB_CHARS], t=dt, **extra)

    def _read_available(self, p: _Proc, out: bytearray, cap: int) -> None:
        """Everything the child wrote to stdout before it reported the result is in the pipe now."""
        if p.out_r is None:
            return
        while len(out) <= cap:
            try:
                data = os.read(p.out_r, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            out += data

    def _ack(self, p: _Proc) -> bool:
        try:
            os.write(p.ack_w, b"k")  # type: ignore[arg-type]
            return True
        except OSError:
            return False

    def _crash(self, p: _Proc, ev: str, timeout: float, loading: bool) -> tuple[str, str]:
        """Verdict kind + reason for a child that did not report a result."""
        where = " while loading the program" if loading else ""
        if ev == "timeout":
            return "timeout", f"Time limit exceeded ({float(timeout)} s){where}."
        if ev == "olimit":
            return "olimit", "Output limit exceeded."
        if ev == "garbage":
            return "error", _CORRUPT
        self.kill(p)
        self.reap(p)
        if self.cgroup is not None and self.cgroup.oom_kills() > p.oom0:
            return "memory", (f"Memory limit exceeded{where}: the program's processes together used more than "
                              f"{self.iso.get('memory_run_mb')} MB.")
        return self._status_verdict(p.status, where)

    @staticmethod
    def _status_verdict(st: int | None, where: str = "") -> tuple[str, str]:
        if st is None:
            return "error", f"RuntimeError: the program died{where}"
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGXCPU:
                return "timeout", f"CPU time limit exceeded{where}."
            if sig == signal.SIGSEGV:
                return "error", f"Segmentation fault{where} (stack overflow?)."
            return "error", f"Killed by signal {name}{where}."
        code = os.WEXITSTATUS(st) if os.WIFEXITED(st) else -1
        return "error", f"RuntimeError: the program exited{where} with status {code}"

    @staticmethod
    def _text(out: bytearray, cap: int) -> str:
        return bytes(out[:cap]).decode("utf-8", errors="replace")

    def result(self, i: int, kind: str, **fields: Any) -> None:
        # Buffered: sent with the next flush (before we block, when the parent asked for streaming to
        # stop early; otherwise with "done"), which saves the parent a wake-up per test.
        if kind == "timeout":
            self.n_timeouts += 1
        self.outbuf.append(frame({"op": "res", "id": self.rid, "i": i, "k": kind, **fields}))

    def flush(self) -> None:
        if self.outbuf:
            data, self.outbuf = b"".join(self.outbuf), []
            write_all(1, data)


def main() -> None:
    # Our own pipes to the parent are fds 0 and 1; Python-level stdio must never write to them.
    reader = FrameReader()
    init = None
    while init is None:
        data = os.read(0, 1 << 16)
        if not data:
            return
        msgs = reader.feed(data)
        if msgs:
            init = msgs[0]
    preload()
    server = Server(init)
    server.parent = reader
    server.pending = msgs[1:]
    server.setup()
    gc.collect()
    _release_free_memory()  # every fork copies the page table entries of what is resident, and every exit frees them
    gc.freeze()  # children do not touch (and copy) the server's objects when they collect
    sys.stdout = sys.stderr  # a stray print must not corrupt the channel
    server.send({"op": "hello", "iso": server.iso, "pid": os.getpid()})
    server.serve()


if __name__ == "__main__":
    main()
