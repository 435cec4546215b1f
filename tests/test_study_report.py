"""The v2 results page (issue 18) on fake ledgers with hand-computed paired differences and verdicts, and the
tree diagnostics on a hand-built tree.

Every per-problem value is ``problem j / 8 + seed / 16 + c(row)`` (exact in binary), so the difference of two
rows is the constant ``c(a) − c(b)`` on every (seed, problem) cell *only* when the rows are paired by seed and by
problem id: the paired bootstrap interval is then degenerate (``[x, x]``). A wrong pairing (by position, with one
row's problems stored in reverse order; or across seeds) gives a spread interval, a wrong split or a wrong sign
gives another verdict.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mars2.tracking import study_report, tree_diagnostics

SEEDS = [0, 1]
PROBLEMS = {"test": ["t0", "t1", "t2", "t3"], "test_iid": ["i0", "i1", "i2", "i3"]}
S16 = 1 / 16

PLAN = {
    "seeds": SEEDS,
    "train": {"runs": {"grpo": [], "rs2": [], "homo": [], "hetero": [], "hetero3": [], "hetero_no_shaping": []}},
    "eval": {
        "splits": ["test", "test_iid"],
        "common": ["eval.budget=16"],
        "runs": {
            "best_of_n": {"of": ["hetero"], "args": []},
            "ab_mcts": {"of": ["rs2", "homo", "hetero"], "args": []},
            "t_plus": {"of": ["hetero"], "args": []},
            "ab_mcts_agent": {"of": ["hetero"], "args": [], "splits": ["test"]},
            "t_plus_feedback_only": {"of": ["hetero"], "args": [], "splits": ["test"]},
            "best_of_n_b32": {"of": ["hetero"], "args": ["eval.budget=32"], "splits": ["test"]},
            "ab_mcts_b32": {"of": ["hetero"], "args": ["eval.budget=32"], "splits": ["test"]},
            "t_plus_b32": {"of": ["hetero"], "args": ["eval.budget=32"], "splits": ["test"]},
        },
    },
}

# training runs: c(row) per (metric, initial/final); hetero3 has no runs (a missing row)
TRAIN = {
    #          pass1 (final, initial)   pass1_mcts (final, initial)   test_iid pass1 (final, initial)
    "grpo": {"eval/pass1": (0, 0), "eval/pass1_mcts": (0, 0), "eval/test_iid/pass1": (3, 0)},
    "rs2": {"eval/pass1": (2, 1), "eval/pass1_mcts": (1, 0), "eval/test_iid/pass1": (2, 0)},
    "homo": {"eval/pass1": (4, 1), "eval/pass1_mcts": (2, 0), "eval/test_iid/pass1": (1, 0)},
    "hetero": {"eval/pass1": (3, 0), "eval/pass1_mcts": (3, 0), "eval/test_iid/pass1": (0, 0)},
    "hetero_no_shaping": {"eval/pass1": (1, 0), "eval/pass1_mcts": (3, 0), "eval/test_iid/pass1": (0, 0)},
}
# evaluations: (split, eval) -> team -> {metric: c}
EVALS = {
    ("test", "best_of_n"): {"hetero": {"eval/pass1_mcts": 0, "eval/tts/16": 0, "eval/tts/8": 2}},
    ("test", "ab_mcts"): {
        "hetero": {"eval/pass1_mcts": 1, "eval/tts/16": 1, "eval/tts/8": 1,
                   "eval/div/ec": 48, "eval/div/structural": 8, "eval/div/semantic": 6},
        "homo": {"eval/pass1_mcts": 1, "eval/div/ec": 32, "eval/div/structural": 2, "eval/div/semantic": 4},
        "rs2": {"eval/pass1_mcts": 0, "eval/div/ec": 16, "eval/div/structural": 4, "eval/div/semantic": 2}},
    ("test", "t_plus"): {"hetero": {"eval/pass1_mcts": 2, "eval/tts/16": 2, "eval/tts/8": 3}},
    ("test", "best_of_n_b32"): {"hetero": {"eval/pass1_mcts": 0, "eval/tts/32": 0}},
    ("test", "ab_mcts_b32"): {"hetero": {"eval/pass1_mcts": 2, "eval/tts/32": 2}},
    ("test", "t_plus_b32"): {"hetero": {"eval/pass1_mcts": 4, "eval/tts/32": 4}},  # written without per-problem file
    ("test", "ab_mcts_agent"): {"hetero": {"eval/pass1_mcts": 1, "eval/agent/a1/pass1_mcts": 0,
                                           "eval/agent/a2/pass1_mcts": 2}},
    ("test", "t_plus_feedback_only"): {"hetero": {"eval/pass1_mcts": 1.5}},
    ("test_iid", "best_of_n"): {"hetero": {"eval/pass1_mcts": 2, "eval/tts/16": 2, "eval/tts/8": 0}},
    ("test_iid", "ab_mcts"): {"hetero": {"eval/pass1_mcts": 1, "eval/tts/16": 1, "eval/tts/8": 1},
                              "homo": {"eval/pass1_mcts": 0}, "rs2": {"eval/pass1_mcts": 0}},
    ("test_iid", "t_plus"): {"hetero": {"eval/pass1_mcts": 0, "eval/tts/16": 0, "eval/tts/8": 0}},
}


def value(j: int, seed: int, c: float, key: str = "") -> float:
    if "/div/ec" in key:  # a count, not a rate: classes j + seed + c/16
        return float(j + seed) + c / 16
    return j / 8 + seed * S16 + c * S16


def write_run(d: Path, per_problem: dict[str, list], problems: dict[str, list], seed: int, rounds: list[int],
              job: dict | None = None, with_problems: bool = True, diag: dict | None = None,
              cfg: dict | None = None, git_sha: str | None = None) -> None:
    """A ledger dir: results.json (initial / final = per-problem means), eval_per_problem.json, job.json.
    ``per_problem``: round -> {key: [values]}."""
    d.mkdir(parents=True)
    evals = []
    for r in rounds:
        ev = {"round": r}
        for k, v in per_problem[r].items():
            xs = [x for x in v if x is not None]
            ev[k] = sum(xs) / len(xs)
        evals.append(ev)
    (d / "results.json").write_text(json.dumps({"status": "completed", "config": cfg or {}, "evals": evals,
                                                "initial": evals[0], "final": evals[-1],
                                                **({"git_sha": git_sha} if git_sha else {})}))
    if with_problems:
        entries = [{"round": r, "seed": seed, "problems": problems, "values": per_problem[r]} for r in rounds]
        (d / "eval_per_problem.json").write_text(json.dumps({"format": "mars2.eval_per_problem/1", "evals": entries}))
    (d / "job.json").write_text(json.dumps(job or {"stage": "train", "name": d.parent.name, "seconds": 100.0,
                                                   "finished": "2026-12-02T07:00:00+0000",
                                                   "loadavg": [2.0, 1.5, 1.0], "commit": "abc1234"}))
    if diag is not None:
        (d / "diagnostics.json").write_text(json.dumps(diag))


def build_ledger(root: Path, diag: dict | None = None) -> Path:
    for run, spec in TRAIN.items():
        for s in SEEDS:
            ids = {"eval": list(PROBLEMS["test"]), "eval/test_iid": list(PROBLEMS["test_iid"])}
            rounds = {}
            for r, w in ((0, 1), (10, 0)):
                rounds[r] = {k: [value(j, s, c[w]) for j in range(4)] for k, c in spec.items()}
            if run == "rs2":  # problems stored in reverse order: pairing by position would be wrong
                ids = {k: v[::-1] for k, v in ids.items()}
                rounds = {r: {k: v[::-1] for k, v in vv.items()} for r, vv in rounds.items()}
            if run == "hetero" and s == 1:  # one problem without a value: pairs use the common problems only
                for r in rounds:
                    rounds[r]["eval/pass1"][3] = None
            write_run(root / "train" / f"{run}_s{s}", rounds, ids, s, [0, 10],
                      git_sha="0123456789abcdef0123" if run == "grpo" else None)
    for (split, name), teams in EVALS.items():
        for team, spec in teams.items():
            for s in SEEDS:
                vals = {0: {k: [value(j, s, c, k) for j in range(4)] for k, c in spec.items()}}
                job = {"stage": "eval", "name": name, "run": team, "split": split, "seconds": 50.0,
                       "finished": "2026-12-02T08:00:00+0000", "loadavg": [4.0, 3.0, 2.0], "commit": "def5678"}
                write_run(root / "eval" / split / name / f"{team}_s{s}", vals, {"eval": PROBLEMS[split]}, s, [0],
                          job=job, with_problems=name != "t_plus_b32",
                          diag=diag if (split, name, team) == ("test", "ab_mcts", "hetero") else None)
    return root


def verdicts(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and line.count("|") == 3:
            k, v = line.strip("| ").split(" | ")
            out[k] = v
    return out


def row(text: str, start: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def const(x: float) -> str:
    """The paired cell of a constant difference x (fraction) in percentage points."""
    return f"{100 * x:+.1f} [{100 * x:+.1f}, {100 * x:+.1f}]"


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("ledger")
    diag = tree_diagnostics.summarize_files([write_tree_file(root / "tree.json")])
    build_ledger(root, diag)
    out = root / "docs"
    out.mkdir()
    (out / "study_notes.md").write_text("## Reading\n\nHAND-WRITTEN NOTE")
    path = study_report.write_report(PLAN, root, out, SEEDS, n_boot=400)
    return path.read_text(), out


def test_claim1_rl_ceiling_paired_per_split_and_gain(page):
    text, _ = page
    v = verdicts(text)
    # Pass@1 after RL on test: steps +2/16, +2/16, −1/16 (hetero below homo): a significant reversal
    assert v["GRPO < RS² < homo < hetero on Pass@1 (after training)"] == (
        f"does not hold (paired, significant reversal: hetero − homo = {const(-S16)})")
    # the RL gains (final − initial of each row): 0, 1/16, 3/16, 3/16 → the last step is exactly 0
    assert v["GRPO < RS² < homo < hetero on the RL gain Δ Pass@1"] == (
        f"does not hold (paired: hetero − homo = {const(0.0)})")
    assert v["GRPO < RS² < homo < hetero on Pass@1(MCTS) (after training)"] == "holds (paired, significant)"
    # test_iid reads eval/test_iid/pass1, whose order is the reverse: every step reversed
    assert v["GRPO < RS² < homo < hetero on Pass@1 (after training) [test_iid]"] == (
        f"does not hold (paired, significant reversal: RS² − GRPO = {const(-S16)}; homo − RS² = {const(-S16)}; "
        f"hetero − homo = {const(-S16)})")
    # the training runs measure no Pass@1(MCTS) on test_iid: no such verdict line
    assert not any(k.startswith("GRPO") and "MCTS" in k and "[test_iid]" in k and "AB-MCTS" not in k for k in v)
    # paired table: rs2 stores its problems reversed, hetero s1 lacks t3 → 2×3 cells for pairs with hetero
    r = row(text, "| RS² (single, tree) − GRPO (single, iid) |")
    assert r[1] == "2×4" and r[2] == const(2 * S16) and r[3] == const(S16)
    r = row(text, "| hetero ×2 − homo ×2 |")
    assert r[1] == "2×3" and r[2] == const(-S16) and r[3] == const(0.0)
    # the RL gain Δ column of the raw table: hetero's pass1 gain is 3/16 (paired final − initial)
    assert row(text, "| hetero ×2 | 2 |")[4] == const(3 * S16)


def test_claim1_missing_row_is_incomplete(page):
    v = verdicts(page[0])
    assert v["GRPO < RS² < homo < hetero ×3 on Pass@1 (after training)"] == "incomplete (missing hetero ×3)"
    assert "incomplete: " in page[0]  # the header says the study is not finished


def test_claim2_tts_at_equal_budgets(page):
    text, out = page
    v = verdicts(text)
    assert v["best-of-N < AB-MCTS < T+ for hetero ×2 at 16 nodes"] == "holds (paired, significant)"
    # at 8 nodes (the prefix eval/tts/8 of the 16-node searches) AB-MCTS is below best-of-N
    assert v["best-of-N < AB-MCTS < T+ for hetero ×2 at 8 nodes"] == (
        f"does not hold (paired, significant reversal: AB-MCTS − best-of-N = {const(-S16)})")
    # at 32 nodes: the T+ run has no per-problem file → unpaired means (t-intervals over 2 seeds overlap)
    assert v["best-of-N < AB-MCTS < T+ for hetero ×2 at 32 nodes"] == "direction only (within CIs)"
    r = row(text, "| hetero ×2 | 32 |")
    assert r[-2] == const(2 * S16) and r[-1] == "+12.5 (unpaired)"
    r = row(text, "| hetero ×2 | 8 |")
    assert r[-2] == const(-S16) and r[-1] == const(2 * S16)
    # test_iid at 16 nodes: 2, 1, 0 → reversed; no 32-node runs on test_iid
    assert v["best-of-N < AB-MCTS < T+ for hetero ×2 at 16 nodes [test_iid]"].startswith(
        "does not hold (paired, significant reversal: AB-MCTS − best-of-N")
    assert "best-of-N < AB-MCTS < T+ for hetero ×2 at 32 nodes [test_iid]" not in v
    assert (out / "results" / "tts_curves_test.png").stat().st_size > 1000


def test_claim3_diversity(page):
    v = verdicts(page[0])
    assert v["diversity EC@K: single < homo < hetero"] == "holds (paired, significant)"
    # structural: homo (2) below RS² (4): raw units, two decimals
    assert v["diversity structural: single < homo < hetero"] == (
        "does not hold (paired, significant reversal: homo − RS² = -0.12 [-0.12, -0.12])")
    assert v["diversity semantic: single < homo < hetero"] == "holds (paired, significant)"
    # no diversity keys on test_iid: the rows exist, the metric does not
    assert v["diversity EC@K: single < homo < hetero [test_iid]"].startswith("not measured (")


def test_claim4_system_vs_each_agent(page):
    text, _ = page
    assert verdicts(text)["system mode > each agent alone for hetero ×2"] == (
        f"does not hold (paired, significant reversal: system − a2 = {const(-S16)})")
    assert row(text, "| hetero ×2 | a1 |")[-1] == const(S16)
    assert row(text, "| hetero ×2 | mean over agents |")[-1] == const(0.0)


def test_claim5_ablations(page):
    text, _ = page
    v = verdicts(text)
    assert v["hetero ×2 > hetero ×2, shaping=none on Pass@1 (after training)"] == "holds (paired, significant)"
    assert v["hetero ×2 > hetero ×2, shaping=none on the RL gain Δ Pass@1"] == "holds (paired, significant)"
    assert v["hetero ×2 > hetero ×2, shaping=none on Pass@1(MCTS) (after training)"] == (
        f"does not hold (paired: hetero ×2 − hetero ×2, shaping=none = {const(0.0)})")
    assert v["hetero ×2 > hetero ×2, shaping=none on Pass@1 (after training) [test_iid]"].startswith("does not hold")
    assert v["T+ feedback only > AB-MCTS for hetero ×2"] == "holds (paired, significant)"
    assert v["T+ > T+ feedback only for hetero ×2"] == "holds (paired, significant)"
    r = row(text, "| hetero ×2 | T+ feedback only |")
    assert r[-2] == const(0.5 * S16) and r[-1] == const(0.5 * S16)


def test_header_diagnostics_figures_and_notes(page):
    text, out = page
    # 5 train rows × 2 seeds (hetero3 missing) + 15 evaluations × 2 seeds, from job.json: 10×100 s + 30×50 s
    assert "10/12 training runs and 30/30 evaluations finished" in text
    assert "0.69 h of job time in total" in text and "1-min mean 3.50" in text
    # the commit a job recorded in its results.json wins over job.json's
    assert "| `def5678` | 30 |" in text and "| `abc1234` | 8 |" in text and "| `0123456` | 2 | grpo |" in text
    # diagnostics.json of the AB-MCTS hetero evaluations (2 seeds of the hand-built tree, pooled)
    r = row(text, "| AB-MCTS | hetero ×2 | 2 |")
    assert r[3] == "16" and r[4] == "25.0" and r[5] == "75.0" and r[9] == "50.0"
    assert ("parent failed in 50.0 % of 4 cases, a fresh generation (depth 1) passes in 50.0 % of 4: refinement "
            "does not repair more often than") in text
    assert "HAND-WRITTEN NOTE" in text and "77.7" in text
    for name in ("scaling_law.png", "scaling_law_test_iid.png", "diversity.png"):
        assert (out / "results" / name).stat().st_size > 1000
    assert "whisker = 95 % t-interval over seeds" in text
    saved = json.loads((out / "results" / "verdicts.json").read_text())
    table = {k: v for k, v in verdicts(text).items() if k != "claim"}  # without the tables' header row
    assert {v["line"]: v["verdict"] for v in saved["verdicts"]} == table and len(saved["verdicts"]) == len(table) == 34


def test_empty_and_partial_ledgers_do_not_crash(tmp_path):
    text = study_report.write_report(PLAN, tmp_path / "nothing", tmp_path / "o1", SEEDS, n_boot=100).read_text()
    assert "incomplete: 0 of" in text
    v = verdicts(text)
    assert v["GRPO < RS² < homo < hetero on Pass@1 (after training)"] == "incomplete (missing GRPO, RS², homo, hetero)"
    # only two training runs of one seed: no paired CI across seeds is needed to say incomplete
    root = tmp_path / "partial"
    for run in ("grpo", "hetero"):
        ids = {"eval": PROBLEMS["test"]}
        write_run(root / "train" / f"{run}_s0", {0: {"eval/pass1": [0.0] * 4}, 10: {"eval/pass1": [0.5] * 4}},
                  ids, 0, [0, 10])
    text = study_report.write_report(PLAN, root, tmp_path / "o2", SEEDS, n_boot=100).read_text()
    v = verdicts(text)
    assert v["GRPO < RS² < homo < hetero on Pass@1 (after training)"] == (
        "incomplete (missing RS², homo)")
    assert v["best-of-N < AB-MCTS < T+ for hetero ×2 at 16 nodes"] == (
        "incomplete (missing best-of-N, AB-MCTS, T+)")


# -- tree diagnostics -------------------------------------------------------------------------------------------
def tree() -> dict:
    def n(i, parent, depth, agent, score, hidden):
        return {"id": i, "parent_id": parent, "depth": depth, "agent_name": agent, "policy_id": agent.lower(),
                "score": score, "hidden_pass": hidden, "children": [], "program": f"p{i}"}

    nodes = [n(0, None, 0, "", 0.0, False),
             n(1, 0, 1, "A", 0.5, False), n(2, 0, 1, "B", 1.0, True),        # GEN
             n(3, 1, 2, "B", 0.75, True),   # improves on 1, fixes a failing parent
             n(4, 1, 2, "A", 0.25, False),  # worse, failing parent stays failing
             n(5, 2, 2, "A", 1.0, False),   # equal score (not improved), breaks a passing parent
             n(6, 3, 3, "A", 1.0, True),    # improves, parent passed, kept
             n(7, 6, 4, "B", 1.0, True),    # equal, kept
             n(8, 7, 5, "B", 0.0, False)]   # depth 5 → bucket 4+, breaks
    for x in nodes:
        if x["parent_id"] is not None:
            nodes[x["parent_id"]]["children"].append(x["id"])
    return {"version": 1, "problem_id": "t0", "nodes": nodes}


def write_tree_file(path: Path, data: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data or {"team": [tree()]}))
    return path


def test_summarize_hand_computed(tmp_path):
    write_tree_file(tmp_path / "ev" / "trees" / "seed0.json")
    s = tree_diagnostics.summarize(tmp_path / "ev")
    json.dumps(s)  # JSON-able
    assert (s["trees"], s["nodes"], s["gen"], s["cont"]) == (1, 8, 2, 6)
    assert s["gen_share"] == 0.25 and s["cont_share"] == 0.75
    assert s["improved"] == pytest.approx(2 / 6)  # nodes 3 and 6
    assert (s["failing_parent"], s["fixed"]) == (2, 0.5)  # 3 fixes node 1, 4 does not
    assert (s["passing_parent"], s["broken"]) == (4, 0.5)  # 5 and 8 break a passing parent
    d = s["depth"]
    assert d["1"]["nodes"] == 2 and d["1"]["score_mean"] == 0.75 and d["1"]["hidden_pass"] == 0.5
    assert d["1"]["improved"] is None and d["1"]["fixed"] is None
    assert d["2"]["nodes"] == 3 and d["2"]["score_mean"] == pytest.approx(2 / 3)
    assert d["2"]["improved"] == pytest.approx(1 / 3) and d["2"]["fixed"] == 0.5 and d["2"]["broken"] == 1.0
    assert d["3"] == {"nodes": 1, "score_mean": 1.0, "hidden_pass": 1.0, "improved": 1.0, "failing_parent": 0,
                      "fixed": None, "passing_parent": 1, "broken": 0.0}
    assert d["4+"]["nodes"] == 2 and d["4+"]["improved"] == 0.0 and d["4+"]["broken"] == 0.5
    a, b = s["agents"]["A"], s["agents"]["B"]
    assert (a["nodes"], a["gen_share"], a["hidden_pass"], a["fixed"], a["broken"]) == (4, 0.25, 0.25, 0.0, 0.5)
    assert a["improved"] == pytest.approx(1 / 3)
    assert (b["nodes"], b["gen_share"], b["hidden_pass"], b["fixed"], b["broken"]) == (4, 0.25, 0.75, 1.0, 0.5)
    assert "searchers" not in s
    # files without a depth field: the depth is counted from the parents
    flat = tree()
    for x in flat["nodes"]:
        del x["depth"]
    write_tree_file(tmp_path / "old" / "trees" / "seed0.json", {"team": [flat]})
    s2 = tree_diagnostics.summarize(tmp_path / "old")
    assert s2["depth"] == s["depth"] and s2["agents"] == s["agents"]
    assert tree_diagnostics.summarize(tmp_path / "none") is None


def test_summarize_agent_mode_training_dirs_and_pool(tmp_path):
    # agent mode: one searcher per agent; pooled at the top, per searcher below
    write_tree_file(tmp_path / "agent" / "trees" / "seed0.json", {"A": [tree()], "B": [tree(), tree()]})
    s = tree_diagnostics.summarize(tmp_path / "agent")
    assert s["nodes"] == 24 and set(s["searchers"]) == {"A", "B"} and s["searchers"]["B"]["nodes"] == 16
    # a training run dir: the last evaluation, the first as `initial`
    t2 = tree()
    t2["nodes"] = t2["nodes"][:3]  # only the two GEN nodes
    write_tree_file(tmp_path / "train" / "trees" / "eval_round0000.json", {"team": [t2]})
    write_tree_file(tmp_path / "train" / "trees" / "eval_round0010.json")
    s = tree_diagnostics.summarize(tmp_path / "train")
    assert s["round"] == 10 and s["nodes"] == 8 and s["initial"]["round"] == 0 and s["initial"]["gen_share"] == 1.0
    # pooling two summaries re-weights every rate by its denominator
    one = tree_diagnostics.summarize_files([write_tree_file(tmp_path / "x.json")])
    two = tree_diagnostics.summarize_files([write_tree_file(tmp_path / "y.json", {"team": [t2]})])
    p = tree_diagnostics.pool([one, two, {"error": "ValueError: broken file"}])
    assert p["n"] == 2 and p["nodes"] == 10 and p["gen_share"] == pytest.approx(4 / 10)
    assert p["fixed"] == 0.5 and p["depth"]["1"]["nodes"] == 4 and p["depth"]["1"]["hidden_pass"] == 0.5
    assert p["agents"]["A"]["nodes"] == 5 and p["agents"]["A"]["gen_share"] == pytest.approx(2 / 5)
    assert tree_diagnostics.pool([]) is None


def test_steps_verdict_three_outcomes_hand_made_cells():
    """A step whose interval reaches 0 is not a "holds": it names the step with its numbers."""
    up = {"mean": 0.05, "ci_low": 0.01, "ci_high": 0.09}
    weak = {"mean": 0.03, "ci_low": -0.02, "ci_high": 0.08}
    down = {"mean": -0.04, "ci_low": -0.07, "ci_high": -0.01}
    assert study_report.steps_verdict([("b − a", up), ("c − b", up)]) == "holds (paired, significant)"
    v = study_report.steps_verdict([("b − a", up), ("c − b", weak)])
    assert v == "direction only, not significant (paired: c − b = +3.0 [-2.0, +8.0])"
    assert not v.startswith("holds")
    v = study_report.steps_verdict([("b − a", weak), ("c − b", down)])
    assert v == "does not hold (paired, significant reversal: c − b = -4.0 [-7.0, -1.0])"


def test_warm_start_fingerprints_name_runs_from_different_starting_policies(tmp_path):
    """Two machines' warm starts of one key differ in their final loss: the page lists both and says so."""
    plan = {"seeds": [0, 1], "train": {"runs": {"grpo": [], "homo": []}}, "eval": {"runs": {}}}
    for run, seed, loss in (("grpo", 0, 0.0646), ("homo", 0, 0.0646), ("grpo", 1, 0.0588), ("homo", 1, 0.0646)):
        d = tmp_path / "train" / f"{run}_s{seed}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({
            "status": "completed", "initial": {"eval/pass1": 0.1}, "final": {"eval/pass1": 0.2},
            "warm_start": {"qwen3_a": {"key": "6b5b", "final_loss": loss, "cached": True}}}))
    s = study_report.Study(plan, tmp_path, [0, 1])
    fps = study_report.warm_start_fingerprints(s)
    assert fps == {("qwen3_a", "6b5b / loss 0.0588"): ["grpo_s1"],
                   ("qwen3_a", "6b5b / loss 0.0646"): ["grpo_s0", "homo_s0", "homo_s1"]}
    text = "\n".join(study_report.warm_start_lines(s))
    assert "more than one per policy" in text and "| `qwen3_a` | `6b5b / loss 0.0588` | 1 | grpo_s1 |" in text


def test_busy_time_is_the_union_of_job_intervals_and_counts_stretches():
    # two overlapping jobs (0-100, 50-150), one touching (150-200), then a 2-hour gap and one job (7400-7500)
    busy, n = study_report._busy_time([(50, 150), (0, 100), (150, 200), (7400, 7500)])
    assert busy == 300 and n == 2
    busy, n = study_report._busy_time([(0, 10), (1000, 1010)])  # a 16-minute gap is one stretch
    assert busy == 20 and n == 1
    assert study_report._busy_time([]) == (0.0, 0)
