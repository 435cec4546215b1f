"""The search-tree explorer (`python -m mars2.trees view <file> -o tree.html`, issue 19.9).

Trees are built with the real classes (Tree / Node / Evaluation) and saved with the real serializer
(`mars2.search.serialize.tree_to_dict`) in the real file layout ({search key: [tree, ...]}), so the explorer
reads what runs write. Default suite: the page's structure (one self-contained file, the embedded data, the
final answers computed by hand), the text exports, bad input. Slow: the page in headless Chromium (DOM node
count, the final-answer mark, a screenshot)."""
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict
from mars2.search.serialize import tree_to_dict
from mars2.search.tree import Node, Tree
from mars2.trees.model import load_trees

ROOT = Path(__file__).resolve().parents[1]


def _res(statuses: list[str]) -> ExecResult:
    return ExecResult(verdicts=[TestVerdict(status=s, input="1 2\n", expected="3\n",
                                            actual="3\n" if s == "passed" else "4\n") for s in statuses])


def _node(tree: Tree, parent: int, agent: str, policy: str, public: list[str], hidden: list[str],
          program: str | None, feedback: str = "") -> int:
    nid = len(tree.nodes)
    depth = tree.nodes[parent].depth + 1
    ev = Evaluation(public=_res(public), hidden=_res(hidden))
    score = sum(s == "passed" for s in public) / len(public)
    tree.nodes.append(Node(id=nid, parent_id=parent, depth=depth, agent_id=0 if agent.startswith("solver") else 1,
                           agent_name=agent, policy_id=policy, text=program or "I think the answer is...",
                           program=program, evaluation=ev, score=score, reward=float(score == 1.0),
                           feedback=feedback))
    tree.nodes[parent].children.append(nid)
    return nid


S, D = "solver@qwen3_a", "debugger@llama_a"
P2, F2 = ["passed", "passed"], ["failed", "failed"]


def demo_trees() -> dict:
    """Three trees with hand-known outcomes:
    - p/solved: #1 fails (score 0), #2 refines #1 and passes public + hidden (score 1), #3 passes half the
      public tests (score 0.5) → final #2, outcome solved.
    - p/missed: #1 passes everything (score 1), #2 passes public only (score 1, newer) → final #2, outcome
      missed (a correct node exists).
    - p/unsolved: #1 no code, #2 fails half the public tests → final #2 (score 0.5), unsolved."""
    a = Tree(problem_id="p/solved")
    n1 = _node(a, 0, S, "qwen3_a", F2, F2, "print(int(input())+1)", "Test 1 failed: expected 3, got 4")
    _node(a, n1, D, "llama_a", P2, P2 * 5, "a, b = map(int, input().split())\nprint(a + b)", "All public tests passed.")
    _node(a, 0, D, "llama_a", ["passed", "failed"], F2, "print(3)", "Test 2 failed: expected 3, got 4 </script>")
    b = Tree(problem_id="p/missed")
    _node(b, 0, S, "qwen3_a", P2, P2, "print(sum(map(int, input().split())))")
    _node(b, 1, D, "llama_a", P2, F2, "print(3)")
    c = Tree(problem_id="p/unsolved")
    _node(c, 0, S, "qwen3_a", ["no_code", "no_code"], ["no_code"], None, "No code found in the response.")
    _node(c, 0, D, "llama_a", ["passed", "failed"], F2, "print(3)")
    return {"team": [tree_to_dict(t) for t in (a, b, c)]}


EXPECTED_FINAL = {"p/solved": 2, "p/missed": 2, "p/unsolved": 2}
EXPECTED_OUTCOME = {"p/solved": "solved", "p/missed": "missed", "p/unsolved": "unsolved"}
EXPECTED_NODES = {"p/solved": 3, "p/missed": 2, "p/unsolved": 2}


@pytest.fixture
def tree_file(tmp_path: Path) -> Path:
    f = tmp_path / "trees" / "eval_round0002.json"
    f.parent.mkdir()
    f.write_text(json.dumps(demo_trees()))
    return f


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mars2.trees", *args], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.data_json = None
        self._in_data = False
        self._buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        self._in_data = tag == "script" and a.get("id") == "tree-data"

    def handle_endtag(self, tag):
        if tag == "script" and self._in_data:
            self.data_json = "".join(self._buf)
            self._in_data = False

    def handle_data(self, data):
        if self._in_data:
            self._buf.append(data)


def test_model_final_answers_and_outcomes_by_hand(tree_file):
    trees = load_trees(tree_file)
    assert [t.problem for t in trees] == ["p/solved", "p/missed", "p/unsolved"]
    for t in trees:
        assert t.final == EXPECTED_FINAL[t.problem]
        assert t.outcome == EXPECTED_OUTCOME[t.problem]
        assert t.n_real == EXPECTED_NODES[t.problem]
    solved = trees[0]
    n2 = solved.nodes[2]
    assert (n2.agent, n2.policy, n2.depth, n2.public, n2.hidden) == (D, "llama_a", 2, (2, 2), (10, 10))
    assert n2.status == "hidden_pass" and n2.received == "Test 1 failed: expected 3, got 4"
    assert solved.nodes[3].status == "partial" and trees[2].nodes[1].status == "no_code"
    # layout: leaves #2 and #3 in slots 0 and 1; #1 centred over its only child; the root between
    assert [n.x for n in solved.nodes] == [0.5, 0.0, 0.0, 1.0] and solved.width == 2


def test_html_page_is_self_contained_and_holds_every_tree(tree_file, tmp_path):
    out = tmp_path / "tree.html"
    p = cli("view", str(tree_file), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "3 trees, 7 nodes" in p.stdout
    text = out.read_text()
    page = _Page()
    page.feed(text)
    # one file: no external scripts, styles, images, frames, fonts, or fetches
    for tag, a in page.tags:
        assert not (tag == "script" and a.get("src")), a
        assert tag not in ("link", "iframe", "img", "object", "embed"), tag
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), "a network address in the page"
    assert "@import" not in text and "fetch(" not in text and "XMLHttpRequest" not in text
    ids = [a.get("id") for _, a in page.tags]
    for needed in ("f-problem", "f-search", "f-outcome", "tree-list", "canvas", "detail", "tree-data"):
        assert needed in ids
    # the embedded data survives a program containing "</script>" and parses back to the same trees
    assert text.count("</script>") == 2
    data = json.loads(page.data_json)
    got = {t["problem"]: (t["final"], t["outcome"], t["n_nodes"]) for t in data["trees"]}
    assert got == {k: (EXPECTED_FINAL[k], EXPECTED_OUTCOME[k], EXPECTED_NODES[k]) for k in EXPECTED_FINAL}
    node = data["trees"][0]["nodes"][2]
    assert node["program"].startswith("a, b = map(int") and node["feedback"] == "All public tests passed."
    assert data["trees"][0]["nodes"][3]["feedback"].endswith("</script>")


def test_filters_and_text_exports(tree_file, tmp_path):
    p = cli("view", str(tree_file), "--format", "mermaid", "--problem", "missed")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("```mermaid") == 1 and "p/missed" in p.stdout
    assert re.search(r'n2\["#2 debugger@llama_a ★', p.stdout) and "n1 --> n2" in p.stdout
    out = tmp_path / "t.dot"
    p = cli("view", str(tree_file), "--format", "dot", "-o", str(out), "--outcome", "solved")
    assert p.returncode == 0, p.stderr
    dot = out.read_text()
    assert dot.startswith("digraph") and dot.count("subgraph cluster_") == 1
    assert "t0_n1 -> t0_n2;" in dot and dot.count("penwidth=4") == 1
    if shutil.which("dot"):
        assert subprocess.run(["dot", "-Tsvg", str(out)], capture_output=True).returncode == 0


@pytest.mark.parametrize("content,msg", [
    (None, "no such file"), ("{not json", "not JSON"), ('{"a": 1}', "not a search-tree file"),
    ('{"team": [{"problem_id": "x"}]}', "not a tree"), ('{"team": []}', "holds no trees"),
])
def test_bad_input_one_line_exit_2(tmp_path, content, msg):
    f = tmp_path / "x.json"
    if content is not None:
        f.write_text(content)
    p = cli("view", str(f), "-o", str(tmp_path / "o.html"))
    assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_no_match_is_one_line(tree_file):
    p = cli("view", str(tree_file), "--problem", "nope")
    assert p.returncode == 2 and "no tree" in p.stderr and "search keys: team" in p.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_page_in_headless_chromium(tree_file, tmp_path):
    """Loads the page in a real browser: the drawn SVG has the tree's nodes and one final-answer mark, the
    detail panel shows the final node's program, the filters list every tree; a screenshot goes to docs/img."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    out = tmp_path / "tree.html"
    assert cli("view", str(tree_file), "-o", str(out), "--title", "search trees · demo fixture (tests/test_trees_view.py)").returncode == 0
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]
    p = subprocess.run([*flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=300)
    dom = p.stdout
    assert 'data-ready="1"' in dom, p.stderr[-2000:]
    svg = re.search(r"<svg[^>]*id=\"tree-svg\".*?</svg>", dom, re.S).group(0)
    # the first listed tree is p/solved: 3 real nodes + the problem root, one final mark on node #2
    assert len(re.findall(r'<g class="node real', svg)) == EXPECTED_NODES["p/solved"]
    finals = re.findall(r'<g class="node real final[^"]*" data-id="(\d+)"', svg)
    assert finals == [str(EXPECTED_FINAL["p/solved"])]
    assert svg.count("★") == 1
    assert len(re.findall(r'class="tree-item[ "]', dom)) == 3 and "3 of 3 trees" in dom
    assert "Node #2" in dom and "map(int, input().split())" in dom
    shot = ROOT / "docs" / "img" / "tree_explorer.png"
    p = subprocess.run([*flags, "--hide-scrollbars", "--window-size=1400,720", f"--screenshot={shot}", out.as_uri()],
                       capture_output=True, text=True, timeout=300)
    assert shot.is_file() and shot.stat().st_size > 5000, p.stderr[-2000:]
