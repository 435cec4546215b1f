"""Text exports of saved trees: Mermaid (a Markdown document, one ```mermaid block per tree, which GitHub and
most Markdown viewers draw) and Graphviz DOT (one digraph, one cluster per tree: ``dot -Tsvg``).

Node label: ``#id agent`` / ``d<depth> s=<public score>`` and a mark: ✓ passes public + hidden tests,
~ public only, ✗ fails, ∅ no code; the final answer is ★ and drawn with a thick gold border."""
from __future__ import annotations

from mars2.trees.model import ViewNode, ViewTree

MARKS = {"hidden_pass": "✓", "public_pass": "~", "partial": "✗", "fail": "✗", "no_code": "∅", "root": ""}
FILL = {"hidden_pass": "#bfe8c6", "public_pass": "#fbe1b0", "partial": "#f6c7b6", "fail": "#f3b9b2",
        "no_code": "#e3e5e8", "root": "#cfd6e0"}


def _label(t: ViewTree, n: ViewNode) -> tuple[str, str]:
    if n.parent is None:
        return f"problem {t.problem}", f"{t.n_real} nodes"
    star = " ★" if n.id == t.final else ""
    return f"#{n.id} {n.agent}{star}", f"d{n.depth} s={n.score:.2f} {MARKS.get(n.status, '')}"


def _mm(s: str) -> str:
    return s.replace('"', "#quot;")


def to_mermaid(trees: list[ViewTree]) -> str:
    out = ["# Search trees", "", "✓ public + hidden tests pass · ~ public only · ✗ fails · ∅ no code · "
           "★ final answer (best public score, newest on ties)", ""]
    for k, t in enumerate(trees):
        out += [f"## {t.problem} ({t.search}) — {t.outcome}", "", "```mermaid", "graph TD"]
        for n in t.nodes:
            a, b = _label(t, n)
            out.append(f'  n{n.id}["{_mm(a)}<br/>{_mm(b)}"]:::{n.status}')
        for n in t.nodes:
            if n.parent is not None:
                out.append(f"  n{n.parent} --> n{n.id}")
        for status, fill in FILL.items():
            out.append(f"  classDef {status} fill:{fill},stroke:#555")
        if t.final is not None:
            out.append(f"  style n{t.final} stroke:#f5b301,stroke-width:4px")
        out += ["```", ""]
    return "\n".join(out)


def _dot(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(trees: list[ViewTree]) -> str:
    out = ["digraph trees {", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    for k, t in enumerate(trees):
        out.append(f"  subgraph cluster_{k} {{")
        out.append(f'    label="{_dot(t.problem)} ({_dot(t.search)}): {t.outcome}";')
        for n in t.nodes:
            a, b = _label(t, n)
            extra = ', penwidth=4, color="#f5b301"' if n.id == t.final else ""
            out.append(f'    t{k}_n{n.id} [label="{_dot(a)}\\n{_dot(b)}", fillcolor="{FILL.get(n.status, "#ffffff")}"{extra}];')
        for n in t.nodes:
            if n.parent is not None:
                out.append(f"    t{k}_n{n.parent} -> t{k}_n{n.id};")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"
