"""Diversity measures (method.md §7) on constructed programs and output vectors with hand-computed values."""
from __future__ import annotations

import math

import pytest

from mars2.metrics.diversity import (
    Candidate,
    behaviour_vector,
    code_token_ngrams,
    cosine_distance,
    diverse_among_correct,
    diversity_summary,
    diversity_values,
    ec_at_k,
    normalised_ast,
    semantic_distance,
    structural_diversity,
    tfidf_vectors,
)
from mars2.sandbox.types import TestVerdict

SORTED = "def solve(xs):\n    # sort them\n    return sorted(xs)\n"
SORTED_RENAMED = "def solve(a: list) -> list:\n    \"\"\"Sorted copy.\"\"\"\n    return sorted(a)"
SORT_IN_PLACE = "def solve(xs):\n    xs.sort()\n    return xs\n"
SORT_DESC = "def solve(xs):\n    return sorted(xs, reverse=True)\n"


# --- behaviour -------------------------------------------------------------------------------------------

def test_behaviour_vector_entries_and_padding() -> None:
    verdicts = [
        TestVerdict("passed", actual="6\n"),
        TestVerdict("wrong_answer", actual="1  2\n 3"),
        TestVerdict("runtime_error", error="ZeroDivisionError"),
        TestVerdict("timeout"),
    ]
    assert behaviour_vector(verdicts, 6) == ("ok", "out:1 2 3", "runtime_error", "timeout", "not_run", "not_run")
    # passing outputs are one behaviour whatever their spelling (the judge's comparison decided)
    assert behaviour_vector([TestVerdict("passed", actual="6")]) == behaviour_vector([TestVerdict("passed", actual="6 ")])


def test_ec_at_k_counts_distinct_vectors_of_programs_only() -> None:
    cands = [
        Candidate("a", ("ok", "ok"), correct=True),
        Candidate("b", ("ok", "ok"), correct=True),     # same behaviour as a, other text
        Candidate("c", ("ok", "out:3")),
        Candidate(None, ("no_code", "no_code")),        # not a program: not counted
    ]
    assert ec_at_k(cands) == 2
    assert ec_at_k([]) == 0
    with pytest.raises(ValueError, match="no output vector"):
        ec_at_k([Candidate("a", None)])


def test_da_needs_two_behaviours_among_correct_programs() -> None:
    same = [Candidate("a", ("ok", "ok", "out:1"), True), Candidate("b", ("ok", "ok", "out:1"), True),
            Candidate("c", ("ok", "out:9", "out:2"), False)]  # c differs but is wrong
    assert diverse_among_correct(same) is False
    apart = same + [Candidate("d", ("ok", "ok", "out:4"), True)]  # correct on tests, differs on a probe
    assert diverse_among_correct(apart) is True
    assert diverse_among_correct([Candidate("a", ("ok",), True)]) is False


# --- structure -------------------------------------------------------------------------------------------

def test_normalised_ast_ignores_names_comments_docstrings_and_hints() -> None:
    assert normalised_ast(SORTED) == normalised_ast(SORTED_RENAMED)
    assert normalised_ast(SORTED) != normalised_ast(SORT_IN_PLACE)
    assert normalised_ast(SORTED) != normalised_ast(SORT_DESC)  # keyword arguments are structure
    # builtins keep their names: sorted vs reversed are different programs
    assert normalised_ast("def f(x):\n    return sorted(x)") != normalised_ast("def f(x):\n    return reversed(x)")
    # attribute names are kept, the receiver is renamed
    assert normalised_ast("def f(a):\n    a.sort()") == normalised_ast("def g(b):\n    b.sort()")
    assert normalised_ast("def f(a):\n    a.sort()") != normalised_ast("def f(a):\n    a.reverse()")
    # stdin scripts: variables renamed in order of first appearance
    assert normalised_ast("xs = input()\nprint(xs)") == normalised_ast("line = input()\nprint(line)")
    assert normalised_ast("def f(:\n  x") == "unparsed:def f(: x"


def test_structural_diversity_hand_computed() -> None:
    # 4 programs, 3 structures (SORTED == SORTED_RENAMED); None is not a program
    assert structural_diversity([SORTED, SORTED_RENAMED, SORT_IN_PLACE, SORT_DESC, None]) == pytest.approx(3 / 4)
    assert structural_diversity([SORTED]) == 1.0
    assert math.isnan(structural_diversity([None]))


# --- semantic --------------------------------------------------------------------------------------------

def test_token_ngrams() -> None:
    grams = code_token_ngrams("x = x + 1")
    assert grams == {"x": 2, "=": 1, "+": 1, "1": 1, "x =": 1, "= x": 1, "x +": 1, "+ 1": 1}
    assert code_token_ngrams("f(x)", (2,)) == {"f (": 1, "( x": 1, "x )": 1}
    with pytest.raises(ValueError):
        code_token_ngrams("x", (0,))


def test_tfidf_and_cosine_hand_computed() -> None:
    v1, v2 = tfidf_vectors([{"a": 2, "b": 1}, {"a": 1, "c": 1}])
    w = math.log(3 / 2) + 1.0  # df = 1 of K = 2 documents (smooth idf)
    assert v1 == pytest.approx({"a": 2.0, "b": w}) and v2 == pytest.approx({"a": 1.0, "c": w})
    # cos = (2·1) / (√(4+w²) · √(1+w²)) with w = 1.405465: √5.975332 · √2.975332 = 4.216464 → cos 0.474331, distance 0.525669
    assert cosine_distance(v1, v2) == pytest.approx(0.525669, abs=1e-6)
    assert cosine_distance({}, {}) == 0.0 and cosine_distance({}, {"a": 1.0}) == 1.0
    assert cosine_distance({"a": 1.0}, {"a": 3.0}) == pytest.approx(0.0)


def test_semantic_distance_hand_computed() -> None:
    # "a", "a", "b": the identical pair is at 0, each pair with "b" shares no token → 1; mean = 2/3
    assert semantic_distance(["a", "a", "b"], ngram=(1,)) == pytest.approx(2 / 3)
    assert semantic_distance(["a", None, "a"], ngram=(1,)) == pytest.approx(0.0)
    assert math.isnan(semantic_distance(["a"])) and math.isnan(semantic_distance([]))
    # renaming a variable moves a program away in token space (unlike the structural measure)
    assert semantic_distance([SORTED, SORTED_RENAMED]) > 0.2


# --- per problem and summary -----------------------------------------------------------------------------

def test_diversity_values_and_summary() -> None:
    p1 = [Candidate(SORTED, ("ok", "ok"), True), Candidate(SORTED_RENAMED, ("ok", "out:1"), True),
          Candidate(SORT_IN_PLACE, ("ok", "ok"), True), Candidate(None, ("no_code", "no_code"))]
    p2 = [Candidate("a", ("out:1",)), Candidate(None, ("no_code",))]
    p3: list[Candidate] = []
    v = diversity_values([p1, p2, p3], ngram=(1,))
    assert v["k"] == [3.0, 1.0, 0.0]
    assert v["ec"] == [2.0, 1.0, 0.0]
    assert v["da"] == [1.0, 0.0, 0.0]
    assert v["structural"][:2] == pytest.approx([2 / 3, 1.0]) and math.isnan(v["structural"][2])
    assert math.isnan(v["semantic"][1]) and math.isnan(v["semantic"][2]) and v["semantic"][0] > 0
    s = diversity_summary([p1, p2, p3], ngram=(1,))
    assert s["ec"] == pytest.approx(1.0) and s["da"] == pytest.approx(1 / 3) and s["k"] == pytest.approx(4 / 3)
    assert s["structural"] == pytest.approx((2 / 3 + 1.0) / 2)  # NaN (no programs) left out
    assert s["semantic"] == pytest.approx(v["semantic"][0])
    no_behaviour = diversity_values([[Candidate("a")]], behaviour=False)
    assert set(no_behaviour) == {"structural", "semantic", "k"}


def test_tokens_drop_comments_and_keep_operators() -> None:
    from mars2.metrics.diversity import code_tokens

    assert code_tokens("if x == 1:  # one\n    y = 'a b'\n") == ["if", "x", "==", "1", ":", "y", "=", "'a b'"]
    assert code_token_ngrams("x = 1  # set x") == code_token_ngrams("x = 1")
    # untokenizable (open string) → the regex fallback: identifiers, numbers, single punctuation marks
    assert code_tokens("def f(:\n  '''open") == ["def", "f", "(", ":", "'", "'", "'", "open"]
