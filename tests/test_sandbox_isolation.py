"""Sandbox round 2 (issue 16): the shared-kernel channels are closed. One hostile test per point of the
issue (2 IPC, 3 keyring, 4 memory per run, 5 syscall filter, 7 cleanup, 9 venv under /tmp) and further
hostile programs; after every test the host is as it was: no IPC objects, no processes or files of the
sandbox's uid, the run's memory given back, the server still serving. Expected outputs are chosen so that
only a containment failure could make a test pass."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from host_state import procs_of as _procs_of
from mars2.sandbox import Sandbox
from mars2.tasks.problem import Problem, TestCase

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux sandbox")

TIMEOUT = 5.0  # generous: nothing here is about speed
SRC = str(Path(__file__).resolve().parents[1] / "src")


def fn(expected: object = "contained", n: int = 1) -> Problem:
    return Problem(id="iso", statement="", mode="functional", entry_point="f",
                   public_tests=tuple(TestCase([], expected) for _ in range(n)), hidden_tests=())


def io(expected: str = "contained") -> Problem:
    return Problem(id="iso-io", statement="", mode="stdin", public_tests=(TestCase("", expected),), hidden_tests=())


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=TIMEOUT, workers=1) as s:
        yield s


def shown(v) -> object:
    """The value a verdict shows, without the " (type X)" note, as a Python value where it is one."""
    text = re.sub(r" \(type [\w.<>]+\)$", "", v.actual)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run1(sb: Sandbox, prog: str, problem: Problem | None = None):
    problem = problem or fn()
    res = sb.run(textwrap.dedent(prog), problem, problem.public_tests)
    assert not any(v.passed for v in res.verdicts), res.verdicts
    return res.verdicts[0]


# -- host-unchanged checks ------------------------------------------------------------------------------

def _sysv_ids() -> dict[str, set[int]]:
    out = {}
    for kind in ("shm", "msg", "sem"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        except OSError:
            lines = []
        out[kind] = {int(x.split()[1]) for x in lines if len(x.split()) > 1}
    return out


def _files_of(uid: int) -> list[str]:
    out = []
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            for n in os.listdir(d):
                try:
                    if os.lstat(os.path.join(d, n)).st_uid == uid:
                        out.append(os.path.join(d, n))
                except OSError:
                    pass
        except OSError:
            pass
    return out


def _cgroup_usage(sb: Sandbox) -> int | None:
    path = sb.isolation.get("memory_cgroup")
    for name in ("memory.current", "memory.usage_in_bytes"):
        try:
            return int(Path(path, name).read_text()) if path else None
        except OSError:
            continue
    return None


def _host_memory_cgroup() -> bool:
    """Whether this host hands out a writable memory cgroup (what the sandbox should then use)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        v2_memory = v2.exists() and "memory" in v2.read_text().split()
    except OSError:
        return False
    for line in lines:
        hid, ctrls, rel = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in ctrls.split(","):
            path = f"/sys/fs/cgroup/{ctrls}{rel}"
        elif hid == "0" and v2_memory:
            path = f"/sys/fs/cgroup{rel}"
        else:
            continue
        if os.access(path, os.W_OK):
            return True
    return False


def _host_ipc_namespaces() -> bool:
    return os.geteuid() == 0  # root (here, CI) can always unshare IPC; unprivileged hosts vary


def _host_seccomp() -> bool:
    return os.path.exists("/proc/sys/kernel/seccomp/actions_avail")


def _server_alive(sb: Sandbox) -> bool:
    p = fn(3)
    return sb.run("def f():\n    return 3", p, p.public_tests).all_passed


@pytest.fixture(autouse=True)
def host_unchanged(sb):
    ipc_before = _sysv_ids()
    yield
    assert _server_alive(sb), "the pool must stay alive"
    iso = sb.isolation
    uid = iso.get("uid")
    if uid not in (None, 65534):
        deadline = time.monotonic() + 10.0
        while _procs_of(uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _procs_of(uid) == [], "stray processes of the sandbox uid"
        assert _files_of(uid) == [], "files of the sandbox uid on the host"
    ipc_after = _sysv_ids()
    assert all(ipc_after[k] <= ipc_before[k] for k in ipc_after), f"IPC objects left on the host: {ipc_after}"
    usage = _cgroup_usage(sb)
    if usage is not None:
        # what the run used is given back (page cache of imported modules may stay: a bound, not zero)
        assert usage < 128 << 20, f"the run's memory was not given back: {usage >> 20} MB still charged"


# -- 2: IPC objects never outlive a run, never reach the host ----------------------------------------

IPC_CREATE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
KEY = 0x4D415253
def f():
    shm = libc.shmget(KEY, 8 << 20, 0o1000 | 0o666)
    if shm >= 0:
        ctypes.memset(libc.shmat(shm, None, 0), 1, 8 << 20)  # resident, outside every rlimit
    return [shm >= 0, libc.msgget(KEY, 0o1000 | 0o666) >= 0, libc.semget(KEY, 4, 0o1000 | 0o666) >= 0,
            libc.mq_open(b"/mars2q", os.O_CREAT | os.O_RDWR, 0o666, None) >= 0]
"""
IPC_FIND = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
KEY = 0x4D415253
def f():
    return [libc.shmget(KEY, 0, 0) >= 0, libc.msgget(KEY, 0) >= 0, libc.semget(KEY, 0, 0) >= 0,
            libc.mq_open(b"/mars2q", os.O_RDWR) >= 0]
"""


def test_ipc_objects_do_not_survive_a_run(sb):
    if not sb.isolation.get("ipcns") and not _host_ipc_namespaces():
        pytest.skip("no IPC namespace on this host")
    host = _sysv_ids()
    v = run1(sb, IPC_CREATE, fn([False] * 4))
    assert shown(v) == [True, True, True, True]  # the program could make them (inside its namespace) ...
    assert _sysv_ids() == host  # ... the host never saw them
    v = run1(sb, IPC_FIND, fn([True] * 4))
    assert shown(v) == [False, False, False, False]  # ... and the next run on the same server finds none


# -- 3: kernel keyrings --------------------------------------------------------------------------------

KEY_ADD = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def f():
    rc = libc.syscall(248, b"user", b"mars2probe", b"secret", 6, -4)  # add_key(..., KEY_SPEC_USER_KEYRING)
    return [rc >= 0, ctypes.get_errno()]
"""
KEY_FIND = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def f():
    rc = libc.syscall(250, 10, -4, b"user", b"mars2probe", 0)  # keyctl(KEYCTL_SEARCH, user keyring, ...)
    return rc >= 0
"""


def test_keyring_is_not_a_channel_between_runs(sb):
    v = run1(sb, KEY_ADD, fn("never"))
    added = shown(v)
    if sb.isolation.get("seccomp"):
        assert added == [False, 1]  # EPERM from the filter
    v = run1(sb, KEY_FIND, fn(True))
    assert shown(v) is False


# -- 4: memory is limited per run, not per process -------------------------------------------------------

FORK_MEMORY = """
import os, select, time
def f():
    r, w = os.pipe()
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            b = bytearray(150 << 20)
            b[::4096] = b"\\x01" * len(range(0, len(b), 4096))  # touch every page: resident
            os.write(w, b"x")
            time.sleep(120)
            os._exit(0)
        pids.append(pid)
    os.close(w)
    got, end = 0, time.monotonic() + 6.0
    while got < 4 and time.monotonic() < end:
        if select.select([r], [], [], 0.2)[0]:
            d = os.read(r, 16)
            if not d:
                break
            got += len(d)
    time.sleep(0.3)
    return sum(os.waitpid(p, os.WNOHANG) == (0, 0) for p in pids)  # children holding 150 MB right now
"""


def test_memory_is_limited_per_run():
    with Sandbox(timeout_s=30.0, workers=1, memory_mb=256) as s:
        iso = s.isolation
        if not _host_memory_cgroup() and not str(iso.get("memory", "")).startswith("cgroup"):
            pytest.skip(f"no memory cgroup on this host ({iso.get('notes')})")
        p = fn(4)
        res = s.run(FORK_MEMORY, p, p.public_tests)
        v = res.verdicts[0]
        # 4 x 150 MB at once would be 600 MB: at most one child can hold its 150 MB under a 288 MB limit
        assert v.status == "memory" or (v.status == "wrong_answer" and shown(v) <= 1), v
        assert iso["memory_run_mb"] == 256 + 32
        # a single process touching more than the run's limit: killed by the kernel, reported as memory
        prog = "def f():\n    b = bytearray(200 << 20)\n    b[::4096] = b'x' * len(range(0, len(b), 4096))\n" \
               "    c = bytearray(200 << 20)\n    c[::4096] = b'x' * len(range(0, len(c), 4096))\n    return 1\n"
        v = s.run(prog, fn(2), fn(2).public_tests).verdicts[0]
        assert v.status == "memory" and "Memory limit" in v.error
        assert _cgroup_usage(s) < 96 << 20  # given back after the run
        assert _server_alive(s)
        cg = iso["memory_cgroup"]
    assert not os.path.exists(cg)  # the server's cgroup goes with it


# -- 5: syscall filter ------------------------------------------------------------------------------------

SYSCALLS = """
import ctypes, errno, os, socket, threading
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *a):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
def sock(fam, typ=socket.SOCK_STREAM, proto=0):
    try:
        socket.socket(fam, typ, proto).close()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, "?")
def f():
    params = ctypes.create_string_buffer(120)
    iov = (ctypes.c_char * 8)()
    out = {
        "io_uring_setup": sc(425, 4, ctypes.addressof(params)),
        "userfaultfd": sc(323, 1),
        "keyctl": sc(250, 0, -4, 0),
        "ptrace": sc(101, 0, 0, 0, 0),
        "unshare_user": sc(272, 0x10000000),
        "unshare_ipc": sc(272, 0x08000000),
        "unshare_pid": sc(272, 0x20000000),  # the filter lets this through for the server: no capability here
        "setns_pid": sc(308, os.open("/proc/self/ns/pid", os.O_RDONLY), 0x20000000),
        "process_vm_readv": sc(310, os.getpid(), 0, 0, 0, 0, 0),
        "vsock": sock(40),
        "netlink": sock(16, socket.SOCK_RAW, 0),
        "packet": sock(17, socket.SOCK_RAW, 0),
        "bpf": sc(321, 0, 0, 0),
        "perf_event_open": sc(298, 0, 0, -1, -1, 0),
    }
    ok = {"unix": sock(socket.AF_UNIX), "inet": sock(socket.AF_INET), "inet6": sock(socket.AF_INET6)}
    t = threading.Thread(target=lambda: ok.__setitem__("thread", "ok"))
    t.start(); t.join()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    ok["fork"] = "ok" if os.waitpid(pid, 0)[1] == 7 << 8 else "bad"
    return [out, ok]
"""


def test_syscall_filter(sb):
    if not sb.isolation.get("seccomp") and not _host_seccomp():
        pytest.skip("no seccomp filter on this host: " + "; ".join(sb.isolation.get("notes") or []))
    v = run1(sb, SYSCALLS, fn("everything allowed"))
    denied, allowed = shown(v)
    assert allowed == {"unix": "ok", "inet": "ok", "inet6": "ok", "thread": "ok", "fork": "ok"}
    for name in ("vsock", "netlink", "packet"):
        assert denied[name] == "EAFNOSUPPORT", (name, denied)
    for name, res in denied.items():
        if name not in ("vsock", "netlink", "packet"):
            assert res == "EPERM", (name, denied)


# -- 7: cleanup must not fail ----------------------------------------------------------------------------

DEEP_TREE = """
import os
def f():
    for base, depth in (("/tmp", 2500), ("/dev/shm", 1500), (os.getcwd(), 800)):
        os.chdir(base)
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        open("leaf", "w").write("x")
        os.symlink("/usr", "usr")
        os.symlink(".", "loop")
    return "made"
"""
LEFTOVERS = """
import os
def f():
    return [n for d in ("/tmp", "/var/tmp", "/dev/shm") for n in os.listdir(d) if not n.startswith("run-")]
"""


def tmp_exposed(sb) -> set[str]:
    """Top-level names under /tmp that the sandbox binds in on purpose: the interpreter's directories when the
    venv lives under /tmp (a fresh clone in /tmp, as CI may use). Anything else there is a leftover."""
    return {p.split("/")[2] for p in sb.isolation.get("exposed", []) if p.startswith("/tmp/")}


def leftovers(sb, v) -> list:
    return [n for n in shown(v) if n not in tmp_exposed(sb)]


def test_deep_directory_tree_is_cleaned_up(sb):
    if not sb.isolation.get("tmpfs"):
        pytest.skip("no private tmpfs on this host")
    pid = sb._workers[0].proc.pid
    v = run1(sb, DEEP_TREE)
    assert v.status == "wrong_answer" and shown(v) == "made"  # the verdict is not lost ...
    assert sb._workers[0].proc.pid == pid  # ... the server did not die in cleanup
    v = run1(sb, LEFTOVERS, fn(["d"]))
    assert leftovers(sb, v) == []


# -- 9: a venv under /tmp ---------------------------------------------------------------------------------

def test_venv_under_tmp_is_visible_to_programs(tmp_path_factory):
    base = tempfile.mkdtemp(prefix="mars2-venv-", dir="/tmp")
    try:
        venv = os.path.join(base, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
        py = os.path.join(venv, "bin", "python")
        site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        Path(site, "mars2_probe_mod.py").write_text("VALUE = 'from the venv'\n")
        script = textwrap.dedent("""
            import json
            from mars2.sandbox import Sandbox
            from mars2.tasks.problem import Problem, TestCase
            p = Problem(id="v", statement="", mode="functional", entry_point="f",
                        public_tests=(TestCase([], "from the venv"),), hidden_tests=())
            with Sandbox(timeout_s=10.0, workers=1) as s:
                r = s.run("import mars2_probe_mod\\ndef f():\\n    return mars2_probe_mod.VALUE", p, p.public_tests)
                print(json.dumps([r.verdicts[0].status, r.verdicts[0].error[-300:], s.isolation.get("root")]))
        """)
        deps = [p for p in sys.path if p.endswith("site-packages")]  # mars2's own dependencies, not the probe's
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join([SRC] + deps)}
        out = subprocess.run([py, "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd="/")
        assert out.returncode == 0, out.stderr[-2000:]
        status, error, root = __import__("json").loads(out.stdout.strip().splitlines()[-1])
        assert status == "passed", error
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- further hostile programs ------------------------------------------------------------------------------

def test_posix_shared_memory_file_does_not_survive(sb):
    prog = """
    import os
    def f():
        fd = os.open("/dev/shm/mars2shm", os.O_CREAT | os.O_RDWR, 0o666)
        os.ftruncate(fd, 16 << 20)
        os.pwrite(fd, b"x" * (16 << 20), 0)
        return os.path.exists("/dev/shm/mars2shm")
    """
    assert shown(run1(sb, prog, fn(False))) is True
    v = run1(sb, "import os\ndef f():\n    return os.path.exists('/dev/shm/mars2shm')\n", fn(True))
    assert shown(v) is False


def test_filling_the_tmpfs(sb):
    prog = """
    import os
    def f():
        k = 0
        try:
            while k < 100:  # files of 15 MB (RLIMIT_FSIZE is 16 MB) until the tmpfs is full
                with open(f"/tmp/fill{k}", "wb") as fh:
                    fh.write(b"x" * (15 << 20))
                k += 1
        except OSError as e:
            return ["stopped", e.errno, k]
        return k
    """
    v = run1(sb, prog, fn("never"))
    assert v.status in ("wrong_answer", "runtime_error", "memory")
    v = run1(sb, "import os\ndef f():\n    st = os.statvfs('/tmp')\n    return st.f_bavail * st.f_frsize < (32 << 20)\n",
             fn(True))
    assert shown(v) is False  # the next run has its whole tmpfs again


def test_inode_exhaustion(sb):
    prog = """
    import os
    def f():
        n = 0
        try:
            while True:
                open(f"/tmp/i{n}", "w").close()
                n += 1
        except OSError:
            return n > 100
    """
    run1(sb, prog, fn(False))
    v = run1(sb, "def f():\n    open('/tmp/one', 'w').close()\n    open('mine', 'w').close()\n    return 'made'\n")
    assert shown(v) == "made"


def test_memfd_held_by_a_daemon(sb):
    prog = """
    import os, time
    def f():
        fds = [os.memfd_create("hold") for _ in range(6)]
        for fd in fds:  # 6 x 15 MB (RLIMIT_FSIZE bounds each one at 16 MB)
            os.pwrite(fd, b"x" * (15 << 20), 0)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(120)
            os._exit(0)
        return "detached"
    """
    assert shown(run1(sb, prog)) == "detached"  # the fixture: no process left, the 90 MB given back


def test_unreadable_directories_in_the_work_dir(sb):
    prog = """
    import os
    def f():
        for base in (".", "/tmp", "/var/tmp"):
            p = os.path.join(base, "a", "b", "c")
            os.makedirs(p)
            open(os.path.join(p, "f"), "w").close()
            for q in (p, os.path.dirname(p), os.path.dirname(os.path.dirname(p))):
                os.chmod(q, 0)
        return "locked"
    """
    assert shown(run1(sb, prog)) == "locked"
    assert leftovers(sb, run1(sb, LEFTOVERS, fn(["a"]))) == []


def test_symlinks_do_not_lead_cleanup_astray(sb):
    prog = """
    import os
    def f():
        os.symlink("/usr", "/tmp/usr")
        os.symlink("/tmp", "/tmp/self")
        os.mkdir("/tmp/x")
        os.symlink("..", "/tmp/x/up")
        os.symlink("/proc/self/root", "/tmp/root")
        return "linked"
    """
    assert shown(run1(sb, prog)) == "linked"
    v = run1(sb, "import os\ndef f():\n    return [os.path.exists('/usr/bin/env'), os.listdir('/tmp'), os.path.basename(os.getcwd())]\n",
             fn("x"))
    exists, tmp, cwd = shown(v)
    assert exists is True and sorted(n for n in tmp if n not in tmp_exposed(sb)) == [cwd]


def test_thread_bomb(sb):
    prog = """
    import threading, time
    def f():
        n = 0
        try:
            while n < 10000:
                threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
                n += 1
        except (RuntimeError, MemoryError):
            pass
        return n
    """
    v = run1(sb, prog, fn(10000))
    assert v.status in ("wrong_answer", "runtime_error", "memory", "timeout")
    if v.status == "wrong_answer":
        assert shown(v) < sb.config.max_processes


def test_raising_own_limits_fails(sb):
    prog = """
    import os, resource
    def f():
        out = []
        for res in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_CPU, resource.RLIMIT_NOFILE):
            try:
                resource.setrlimit(res, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                out.append(True)
            except (ValueError, OSError):
                out.append(False)
        try:
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("-1000")  # make itself the last thing the OOM killer would pick
            out.append(True)
        except OSError:
            out.append(False)
        return out
    """
    v = run1(sb, prog, fn([True] * 5))
    assert shown(v) == [False] * 5


def test_privileged_operations_fail(sb):
    prog = """
    import ctypes, errno, os
    libc = ctypes.CDLL(None, use_errno=True)
    def sc(nr, *a):
        r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
        return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    def f():
        out = {"personality": sc(135, 0x0400000), "modify_ldt": sc(154, 0, 0, 0),
               "mount": sc(165, 0, 0, 0, 0, 0), "chroot": sc(161, 0), "setns": sc(308, 0, 0)}
        try:
            os.mknod("/tmp/null", 0o666 | 0o020000, os.makedev(1, 3))
            out["mknod"] = "ok"
        except OSError as e:
            out["mknod"] = errno.errorcode[e.errno]
        return out
    """
    v = run1(sb, prog, fn("x"))
    out = shown(v)
    assert all(res != "ok" for res in out.values()), out


def test_stopped_and_signal_proof_processes_are_killed(sb):
    prog = """
    import ctypes, os, signal, time
    def f():
        if os.fork() == 0:
            os.kill(os.getpid(), signal.SIGSTOP)
            os._exit(0)
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG 0
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(s, signal.SIG_IGN)
            os.setsid()
            time.sleep(120)
        return "spawned"
    """
    assert shown(run1(sb, prog)) == "spawned"  # the fixture: nothing of the sandbox uid left


def test_abstract_unix_socket_is_not_a_channel(sb):
    prog = """
    import os, socket, time
    def f():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("\\0mars2-abstract")
        s.listen(1)
        if os.fork() == 0:
            os.setsid()
            time.sleep(120)
        return "listening"
    """
    assert shown(run1(sb, prog)) == "listening"
    prog = """
    import socket
    def f():
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect("\\0mars2-abstract")
            return True
        except OSError:
            return False
    """
    assert shown(run1(sb, prog, fn(True))) is False


def test_sysv_queue_filled_and_semaphore_held(sb):
    if not sb.isolation.get("ipcns") and not _host_ipc_namespaces():
        pytest.skip("no IPC namespace on this host")
    prog = """
    import ctypes, os, time
    libc = ctypes.CDLL(None, use_errno=True)
    def f():
        q = libc.msgget(0x4D415254, 0o1000 | 0o666)
        msg = ctypes.create_string_buffer(8 + 1024)
        ctypes.c_long.from_buffer(msg).value = 1
        n = 0
        while libc.msgsnd(q, msg, 1024, 0o4000) == 0 and n < 100000:  # IPC_NOWAIT: until the queue is full
            n += 1
        sem = libc.semget(0x4D415255, 8, 0o1000 | 0o666)
        if os.fork() == 0:
            os.setsid()
            time.sleep(120)
        return [q >= 0, n > 0, sem >= 0]
    """
    assert shown(run1(sb, prog, fn("x"))) == [True, True, True]
    prog = """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def f():
        return [libc.msgget(0x4D415254, 0) >= 0, libc.semget(0x4D415255, 0, 0) >= 0,
                open("/proc/sysvipc/msg").read().count("\\n") > 1]
    """
    assert shown(run1(sb, prog, fn([True, True, True]))) == [False, False, False]


def test_isolation_report_names_every_layer(sb):
    iso = sb.isolation
    for key in ("netns", "mountns", "ipcns", "pidns", "uid", "seccomp", "memory", "tmpfs", "notes"):
        assert key in iso, key
    assert iso["memory"] in ("cgroup1", "cgroup2", "rlimit_as", "none")
    if iso["memory"] == "rlimit_as":  # the fallback is documented in the notes
        assert any("RLIMIT_AS" in n for n in iso["notes"])
    if os.geteuid() == 0:
        assert iso["ipcns"] and iso["netns"] and iso["mountns"]


def test_many_servers_leave_no_cgroups():
    before = None
    for _ in range(3):
        with Sandbox(timeout_s=TIMEOUT, workers=2) as s:
            iso = s.isolation
            if not str(iso.get("memory", "")).startswith("cgroup"):
                pytest.skip("no memory cgroup on this host")
            parent = os.path.dirname(iso["memory_cgroup"])
            if before is None:
                before = {n for n in os.listdir(parent) if n.startswith("mars2-sandbox-")} - {
                    os.path.basename(w.iso["memory_cgroup"]) for w in s._workers}
            s._workers[0].proc.kill()  # a server killed outright: its parent removes its cgroup
            s._workers[0].proc.wait()
    time.sleep(0.2)
    mine = {n for n in os.listdir(parent) if n.startswith("mars2-sandbox-")} - before
    assert mine == set()


def test_uuid_marker_files_never_reach_the_host(sb):
    tag = uuid.uuid4().hex
    prog = f"""
    import os
    def f():
        for d in ("/tmp", "/var/tmp", "/dev/shm", "."):
            open(os.path.join(d, "mars2_{tag}"), "w").write("x")
        return "written"
    """
    assert shown(run1(sb, prog)) == "written"
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not os.path.exists(os.path.join(d, f"mars2_{tag}"))
