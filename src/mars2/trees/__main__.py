"""``python -m mars2.trees view FILE [-o OUT] [--format html|mermaid|dot] [--problem S] [--search K] [--outcome O]``

html (default): one self-contained page with every selected tree (``-o`` defaults to ``<file stem>.html``
next to the current directory). mermaid / dot: text on stdout, or in ``-o``. Bad input: one line, exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mars2.trees.model import OUTCOME_LABELS, TreeFileError, load_trees, select


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mars2.trees", description="Browse saved search trees.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("view", help="render a tree file (<run dir>/trees/*.json)")
    v.add_argument("file", help="a saved tree file, e.g. outputs/<run>/trees/eval_round0002.json")
    v.add_argument("-o", "--output", help="output file (html: default <file stem>.html; text formats: stdout)")
    v.add_argument("--format", choices=("html", "mermaid", "dot"), default="html")
    v.add_argument("--problem", help="only trees whose problem id contains this")
    v.add_argument("--search", help="only this search key of the file (e.g. team, or an agent name)")
    v.add_argument("--outcome", choices=tuple(OUTCOME_LABELS), help="only trees with this outcome")
    v.add_argument("--title", help="page title (html)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        trees = load_trees(args.file)
    except TreeFileError as e:
        print(f"mars2.trees: {e}", file=sys.stderr)
        return 2
    picked = select(trees, args.problem, args.search, args.outcome)
    if not picked:
        keys = sorted({t.search for t in trees})
        print(f"mars2.trees: no tree of {args.file} matches the filters ({len(trees)} trees; search keys: "
              f"{', '.join(keys)})", file=sys.stderr)
        return 2
    if args.format == "html":
        from mars2.trees.html import render_html

        text = render_html(picked, source=str(args.file), title=args.title)
        out = Path(args.output or (Path(args.file).stem + ".html"))
    else:
        from mars2.trees.text import to_dot, to_mermaid

        text = to_mermaid(picked) if args.format == "mermaid" else to_dot(picked)
        out = Path(args.output) if args.output else None
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        print(f"mars2.trees: cannot write {out}: {e}", file=sys.stderr)
        return 2
    print(f"{out}: {len(picked)} trees, {sum(t.n_real for t in picked)} nodes ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
