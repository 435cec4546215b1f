"""Diversity of the candidate programs of a search (method.md §7 "Diversity").

The papers name semantic / algorithmic / cognitive diversity and AEC / DA@K without defining them; method.md
fixes four measures, computed **per problem over its K candidate programs** and averaged over problems:

- **EC@K** (behavioural equivalence classes): the number of distinct *output vectors* of the K programs on
  a fixed probe input set (the same inputs for every candidate of a problem).
- **structural diversity**: distinct normalised ASTs / K.
- **semantic distance**: mean pairwise cosine distance of token n-gram TF-IDF vectors.
- **DA@K**: fraction of problems with ≥ 2 distinct behavioural classes among the *correct* candidates.

Choices where method.md is silent (ours, documented in the README):

- **Candidates** are the nodes that contain a program (an extracted code block). Nodes without code are not
  programs and are left out of every measure; K is the number of programs (``k`` is reported).
- **Output vector**: one entry per probe input — ``"ok"`` when the program's output equals the expected one
  (under the judge's comparison, so ``6`` and ``6\\n`` or floats within tolerance are one behaviour), the
  produced output (whitespace-normalised, as trimmed by the sandbox) when it differs, or the failure kind
  (``runtime_error``, ``timeout``, ``memory``, ``output_limit``; ``not_run`` when the run stopped early).
- **Probe set**: the problem's own public + hidden test inputs (the verdicts the search already computed)
  plus, for generated problems with a reference solution, extra seeded probe inputs outside the tests (see
  :func:`mars2.tasks.minicode.probe_tests`). Correct programs agree on every test by definition, so DA@K
  needs inputs beyond the tests to see two correct programs behave differently.
- **Normalised AST**: ``ast.parse``; docstrings dropped; every identifier that is not a builtin (variables,
  arguments, function and class names, attribute names are kept) renamed to ``v0, v1, …`` in order of first
  appearance; ``ast.dump`` without positions. Comments and formatting vanish with the parse. A program that
  does not parse is keyed by its whitespace-collapsed text.
- **Tokens / TF-IDF**: Python tokens (names, numbers, strings, operators; comments and layout dropped, so a
  comment does not make two programs "semantically" apart); n-grams for n in ``ngram``
  (default 1 and 2); raw counts × smooth IDF ``ln((1+K)/(1+df)) + 1`` with document frequencies over the
  problem's own K candidates (sklearn's default). Cosine distance ``1 − cos``; two empty vectors are at
  distance 0, an empty and a non-empty one at distance 1.
- **Degenerate sizes**: EC@K = 0 for K = 0; structural diversity is undefined for K = 0 and semantic distance
  for K < 2 (NaN, left out of the mean over problems). DA@K counts a problem with < 2 correct candidates as
  not diverse (so DA@K ≤ Pass@N), and is a mean over all problems.

Plain Python (no numpy needed): metrics are computed on lists of :class:`Candidate`.
"""
from __future__ import annotations

import ast
import builtins
import io
import math
import re
import tokenize
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "Candidate",
    "DIVERSITY_METRICS",
    "behaviour_vector",
    "code_token_ngrams",
    "code_tokens",
    "cosine_distance",
    "diverse_among_correct",
    "diversity_summary",
    "diversity_values",
    "ec_at_k",
    "normalised_ast",
    "semantic_distance",
    "structural_diversity",
    "tfidf_vectors",
]

DIVERSITY_METRICS = ("ec", "structural", "semantic", "da", "k")

_TOKEN_RE = re.compile(r"[A-Za-z_]\w*|\d+|[^\w\s]")
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class Candidate:
    """One candidate program of one problem: its text, its behaviour on the probe set (None: not run) and
    whether it is correct (passes public and hidden tests)."""

    program: str | None
    outputs: tuple[str, ...] | None = None
    correct: bool = False


# ---------------------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------------------

def behaviour_vector(verdicts: Iterable[Any], n: int | None = None) -> tuple[str, ...]:
    """The output vector of one program from sandbox verdicts (``TestVerdict``-like: ``status``, ``actual``).

    ``n``: the probe-set size; a shorter verdict list (the run stopped at a failure) is padded with
    ``"not_run"`` so vectors of one problem are always comparable position by position."""
    out: list[str] = []
    for v in verdicts:
        status = getattr(v, "status", "runtime_error")
        if status == "passed":
            out.append("ok")
        elif status == "wrong_answer":
            out.append("out:" + " ".join(str(getattr(v, "actual", "")).split()))
        else:
            out.append(str(status))
    if n is not None:
        out += ["not_run"] * max(0, n - len(out))
    return tuple(out)


def _programs(cands: Sequence[Candidate]) -> list[Candidate]:
    return [c for c in cands if c.program is not None]


def ec_at_k(cands: Sequence[Candidate]) -> int:
    """EC@K: distinct output vectors among the candidates with a program (0 when there is none)."""
    progs = _programs(cands)
    missing = [c for c in progs if c.outputs is None]
    if missing:
        raise ValueError(f"ec_at_k: {len(missing)} candidate(s) have no output vector (run the probes first)")
    return len({c.outputs for c in progs})


def diverse_among_correct(cands: Sequence[Candidate]) -> bool:
    """The DA@K indicator of one problem: ≥ 2 distinct output vectors among the correct programs."""
    correct = [c for c in _programs(cands) if c.correct]
    if any(c.outputs is None for c in correct):
        raise ValueError("diverse_among_correct: a correct candidate has no output vector")
    return len({c.outputs for c in correct}) >= 2


# ---------------------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------------------

class _Renamer(ast.NodeTransformer):
    """Rename non-builtin identifiers to v0, v1, … in order of first appearance (attribute names are kept:
    ``xs.sort()`` and ``xs.reverse()`` are different structures)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _new(self, name: str) -> str:
        if name in _BUILTINS:
            return name
        if name not in self.names:
            self.names[name] = f"v{len(self.names)}"
        return self.names[name]

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._new(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._new(node.arg)
        node.annotation = None  # type hints do not change what the program does
        return node

    def _visit_def(self, node: Any) -> ast.AST:
        node.name = self._new(node.name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]  # drop the docstring
        self.generic_visit(node)
        return node

    visit_FunctionDef = _visit_def
    visit_AsyncFunctionDef = _visit_def
    visit_ClassDef = _visit_def

    def visit_alias(self, node: ast.alias) -> ast.AST:
        if node.asname:
            node.asname = self._new(node.asname)
        return node

    def visit_Global(self, node: ast.Global) -> ast.AST:
        node.names = [self._new(n) for n in node.names]
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        node.names = [self._new(n) for n in node.names]
        return node


def normalised_ast(program: str) -> str:
    """A canonical string of the program's structure (see the module docstring for the rules)."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "unparsed:" + " ".join(program.split())
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        tree.body = body[1:]  # module docstring
    tree = _Renamer().visit(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def structural_diversity(programs: Sequence[str | None]) -> float:
    """Distinct normalised ASTs / K over the programs (``None`` entries are not programs); NaN for K = 0."""
    progs = [p for p in programs if p is not None]
    if not progs:
        return math.nan
    return len({normalised_ast(p) for p in progs}) / len(progs)


# ---------------------------------------------------------------------------------------------------------
# Semantic (token n-gram TF-IDF)
# ---------------------------------------------------------------------------------------------------------

def code_tokens(program: str) -> list[str]:
    """Python tokens of the program without comments and layout (names, numbers, strings, operators);
    a program that does not tokenize falls back to identifiers, numbers and single punctuation marks."""
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(program).readline)
                if t.type in (tokenize.NAME, tokenize.NUMBER, tokenize.STRING, tokenize.OP)]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return _TOKEN_RE.findall(program)


def code_token_ngrams(program: str, ngram: Sequence[int] = (1, 2)) -> Counter[str]:
    """Counts of token n-grams (:func:`code_tokens` joined by a space) for every n in ``ngram``."""
    toks = code_tokens(program)
    grams: Counter[str] = Counter()
    for n in ngram:
        if n < 1:
            raise ValueError(f"n-gram sizes must be >= 1, got {n}")
        for i in range(len(toks) - n + 1):
            grams[" ".join(toks[i:i + n])] += 1
    return grams


def tfidf_vectors(docs: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
    """TF-IDF of term-count documents: tf = count, idf = ln((1+K)/(1+df)) + 1 (smooth), df over ``docs``."""
    k = len(docs)
    df: Counter[str] = Counter()
    for d in docs:
        df.update({t for t, c in d.items() if c})
    idf = {t: math.log((1 + k) / (1 + n)) + 1.0 for t, n in df.items()}
    return [{t: c * idf[t] for t, c in d.items() if c} for d in docs]


def cosine_distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """1 − cosine similarity of two sparse vectors; 0 for two empty vectors, 1 for one empty vector."""
    na = math.sqrt(sum(v * v for v in a.values()))
    nb = math.sqrt(sum(v * v for v in b.values()))
    if na == 0.0 and nb == 0.0:
        return 0.0
    if na == 0.0 or nb == 0.0:
        return 1.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    dot = sum(v * large.get(t, 0.0) for t, v in small.items())
    return max(0.0, 1.0 - dot / (na * nb))  # clamp tiny negative rounding


def semantic_distance(programs: Sequence[str | None], ngram: Sequence[int] = (1, 2)) -> float:
    """Mean pairwise cosine distance of the programs' TF-IDF vectors (all K(K−1)/2 pairs, identical programs
    included at distance 0); NaN for K < 2."""
    progs = [p for p in programs if p is not None]
    if len(progs) < 2:
        return math.nan
    vecs = tfidf_vectors([code_token_ngrams(p, ngram) for p in progs])
    total, pairs = 0.0, 0
    for i in range(len(vecs)):
        for j in range(i + 1, len(vecs)):
            total += cosine_distance(vecs[i], vecs[j])
            pairs += 1
    return total / pairs


# ---------------------------------------------------------------------------------------------------------
# Per problem and summaries
# ---------------------------------------------------------------------------------------------------------

def diversity_values(
    problems: Sequence[Sequence[Candidate]], ngram: Sequence[int] = (1, 2), behaviour: bool = True
) -> dict[str, list[float]]:
    """Per-problem values of every measure: ``ec`` (EC@K), ``structural``, ``semantic``, ``da`` (0/1 DA@K
    indicator) and ``k`` (programs). ``behaviour=False`` skips the two behavioural measures (no probes run)."""
    out: dict[str, list[float]] = {m: [] for m in DIVERSITY_METRICS}
    if not behaviour:
        del out["ec"], out["da"]
    for cands in problems:
        progs = [c.program for c in cands if c.program is not None]
        out["k"].append(float(len(progs)))
        out["structural"].append(structural_diversity(progs))
        out["semantic"].append(semantic_distance(progs, ngram))
        if behaviour:
            out["ec"].append(float(ec_at_k(cands)))
            out["da"].append(1.0 if diverse_among_correct(cands) else 0.0)
    return out


def nanmean(values: Iterable[float]) -> float:
    """Mean of the non-NaN values (NaN when there is none)."""
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def diversity_summary(
    problems: Sequence[Sequence[Candidate]], ngram: Sequence[int] = (1, 2), behaviour: bool = True
) -> dict[str, float]:
    """Means over problems of :func:`diversity_values` (NaN entries left out)."""
    return {m: nanmean(v) for m, v in diversity_values(problems, ngram, behaviour).items()}
