"""minicode: the generated miniature benchmark (method.md §9, design.md "The miniature world").

A problem composes *primitives*. Each primitive is one English phrase in the statement and one code line
in the reference solution, so a tiny language model can learn the phrase→line mapping and is then asked to
generalise to compositions it has never seen:

    Given a list of integers xs: remove the negative numbers, then multiply every number by 2, then
    return the sum.

    def solve(xs):
        xs = [x for x in xs if x >= 0]
        xs = [x * 2 for x in xs]
        return sum(xs)

Three families share the machinery:

- ``list``   – functional ``def solve(xs):`` on a list of ints; final phrase returns the list or a reduction;
- ``string`` – functional ``def solve(s):`` on a string; final phrase returns the string, its length or a count;
- ``stdin``  – the list primitives as a script reading one line of space-separated ints and printing the
  result (space-separated) or the reduced number.

Our choices (documented here because method.md leaves them open):

- A final reduction ("return the sum") is itself a primitive: it is one phrase and one line. ``depth`` =
  ``difficulty`` = number of primitives, reductions included; the default "return the resulting list" is not
  counted.
- **Disjoint compositions.** A composition is the ordered tuple of primitive names (constants excluded;
  list and stdin problems share list primitive names, so a composition used by a stdin test problem never
  appears as a functional training problem either). Each composition is owned by exactly one split:
  compositions of one (kind, depth) are ordered by a seeded hash and cut into consecutive blocks whose sizes
  follow ``SPLIT_SHARES`` among the splits that request that depth. Hence the assignment does not depend on
  the split sizes (changing ``n_train`` does not change which compositions are held out).
- **Underspecified phrases** (``vague_fraction``, issue 17): a primitive with a twin (sort ascending /
  descending, keep even / odd, add / subtract k, keep greater / less than k, max / min, upper / lower case;
  :data:`TWINS`) has a second phrase that fits both readings ("sort the numbers in the order the examples
  show"). In that share of the problems that have such a step, one of them is stated vaguely; the public
  examples always tell the readings apart (and the hidden tests check it). A statement alone then leaves one
  choice open, the examples or the feedback of a failed attempt close it: refinement has something to add
  that a fresh sample lacks. The composition is still the tuple of the *true* readings, so ownership and
  disjointness are as before (a vague test statement may read like a warm-up one of the twin composition:
  the examples decide which it is).
- **Degenerate problems are rejected:** if all tests share one output, if leaving out any one step gives
  the same hidden outputs (the tests could not check that phrase), or if a trivial program (return the
  input unchanged / an empty value / 0) passes more than ``TRIVIAL_MAX_FRACTION`` of hidden tests.
- Everything is drawn from ``random.Random`` instances seeded by strings (``f"minicode|{seed}|{split}"``),
  which CPython seeds through SHA-512: reproducible across processes and independent of PYTHONHASHSEED.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import itertools
import json
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from mars2.tasks.problem import Problem, TestCase

__all__ = [
    "generate_minicode",
    "verify_problems",
    "MINICODE_VERSION",
    "corpus_texts",
    "Primitive",
    "LIST_PRIMITIVES",
    "LIST_REDUCTIONS",
    "STRING_PRIMITIVES",
    "STRING_REDUCTIONS",
    "SPLIT_SHARES",
    "TRIVIAL_MAX_FRACTION",
    "probe_tests",
    "VAGUE_PHRASES",
    "TWINS",
    "alternative_solution",
]

# Bump whenever the generated problems change for a given seed/arguments, so caches keyed on the task
# config (tokenizer, warm start) can include it.
MINICODE_VERSION = 5  # 5: underspecified ("vague") phrases; 4: hidden tests rebalanced against constant answers
SPLITS = ("warmup", "train", "test")
# Fraction of each (kind, depth) composition pool owned by a split, renormalised among the splits that
# request that depth (method.md §9 "disjoint compositions"). Fixed rather than size-proportional so the
# held-out compositions stay the same when the split sizes change.
SPLIT_SHARES: dict[str, float] = {"warmup": 0.6, "train": 0.25, "test": 0.15}
# A problem is rejected when "return the input" or "return empty" passes more than this fraction of the
# hidden tests: such tests would not tell a wrong program from a right one. A constant answer is kept under
# it by rebalancing the hidden tests (`_rebalance_constant`).
TRIVIAL_MAX_FRACTION = 0.5
# Above this many candidate compositions for one (kind, depth) we do not enumerate; ownership then comes
# from the same seeded hash compared against the cumulative shares (rejection sampling).
_ENUMERATE_LIMIT = 50_000
_MAX_ATTEMPTS = 200
_DUPLICATE_TRIES = 20
_VALUE_RANGE = (-9, 9)
_MAX_LEN = 8

# Random strings: lowercase letters weighted up, a few capitals, digits and spaces so that every string
# primitive usually changes something.
_STR_POOL = "abcdeioxyzabeoABEX012  "
_REPLACE_FROM = "abeo"
_REPLACE_TO = "xyz-"
_COUNT_CHARS = "abe"


@dataclass(frozen=True)
class Primitive:
    """One step: one phrase of the statement, one line of the reference (method.md §9)."""

    name: str
    kind: str  # "list" | "str"
    phrase: str  # format string; {k} = constant; {verb} = "return"/"print" for reductions
    code: str  # format string of the code line (without indentation); {k} = constant as Python literal
    fn: Callable[[Any, Any], Any]
    k_choices: tuple[Any, ...] = ()
    reduction: bool = False

    def render(self, k: Any, verb: str = "return", vague: bool = False) -> tuple[str, str]:
        """The phrase and code line for constant ``k`` (characters are quoted with ``repr`` in both);
        ``vague``: the phrase that fits this primitive and its twin (:data:`VAGUE_PHRASES`)."""
        lit: Any = tuple(repr(c) for c in k) if isinstance(k, tuple) else (repr(k) if isinstance(k, str) else k)
        phrase = VAGUE_PHRASES[self.name] if vague else self.phrase
        return phrase.format(k=lit, verb=verb), self.code.format(k=lit)


def _p(name: str, kind: str, phrase: str, code: str, fn: Callable[[Any, Any], Any],
       k_choices: Iterable[Any] = (), reduction: bool = False) -> Primitive:
    return Primitive(name, kind, phrase, code, fn, tuple(k_choices), reduction)


_VOWELS = "aeiouAEIOU"

LIST_PRIMITIVES: tuple[Primitive, ...] = (
    _p("keep_even", "list", "keep only the even numbers", "xs = [x for x in xs if x % 2 == 0]",
       lambda xs, k: [x for x in xs if x % 2 == 0]),
    _p("keep_odd", "list", "keep only the odd numbers", "xs = [x for x in xs if x % 2 != 0]",
       lambda xs, k: [x for x in xs if x % 2 != 0]),
    _p("add", "list", "add {k} to every number", "xs = [x + {k} for x in xs]",
       lambda xs, k: [x + k for x in xs], range(1, 6)),
    _p("sub", "list", "subtract {k} from every number", "xs = [x - {k} for x in xs]",
       lambda xs, k: [x - k for x in xs], range(1, 6)),
    _p("mul", "list", "multiply every number by {k}", "xs = [x * {k} for x in xs]",
       lambda xs, k: [x * k for x in xs], range(2, 5)),
    _p("floordiv", "list", "divide every number by {k} rounding down", "xs = [x // {k} for x in xs]",
       lambda xs, k: [x // k for x in xs], range(2, 4)),
    _p("mod", "list", "replace every number by its remainder modulo {k}", "xs = [x % {k} for x in xs]",
       lambda xs, k: [x % k for x in xs], range(2, 6)),
    _p("square", "list", "square every number", "xs = [x * x for x in xs]",
       lambda xs, k: [x * x for x in xs]),
    _p("abs", "list", "replace every number by its absolute value", "xs = [abs(x) for x in xs]",
       lambda xs, k: [abs(x) for x in xs]),
    _p("negate", "list", "negate every number", "xs = [-x for x in xs]",
       lambda xs, k: [-x for x in xs]),
    _p("remove_neg", "list", "remove the negative numbers", "xs = [x for x in xs if x >= 0]",
       lambda xs, k: [x for x in xs if x >= 0]),
    _p("keep_gt", "list", "keep only the numbers greater than {k}", "xs = [x for x in xs if x > {k}]",
       lambda xs, k: [x for x in xs if x > k], range(-3, 5)),
    _p("keep_lt", "list", "keep only the numbers less than {k}", "xs = [x for x in xs if x < {k}]",
       lambda xs, k: [x for x in xs if x < k], range(-2, 6)),
    _p("cap", "list", "replace every number greater than {k} by {k}", "xs = [min(x, {k}) for x in xs]",
       lambda xs, k: [min(x, k) for x in xs], range(0, 6)),
    _p("sort_asc", "list", "sort the numbers in ascending order", "xs = sorted(xs)",
       lambda xs, k: sorted(xs)),
    _p("sort_desc", "list", "sort the numbers in descending order", "xs = sorted(xs, reverse=True)",
       lambda xs, k: sorted(xs, reverse=True)),
    _p("reverse", "list", "reverse the order of the numbers", "xs = xs[::-1]",
       lambda xs, k: xs[::-1]),
    _p("dedup", "list", "remove duplicate numbers keeping first occurrences", "xs = list(dict.fromkeys(xs))",
       lambda xs, k: list(dict.fromkeys(xs))),
    _p("take", "list", "keep the first {k} numbers", "xs = xs[:{k}]",
       lambda xs, k: xs[:k], range(1, 5)),
    _p("drop", "list", "drop the first {k} numbers", "xs = xs[{k}:]",
       lambda xs, k: xs[k:], range(1, 4)),
)

LIST_REDUCTIONS: tuple[Primitive, ...] = (
    _p("sum", "list", "{verb} the sum", "sum(xs)", lambda xs, k: sum(xs), reduction=True),
    _p("count", "list", "{verb} the number of elements", "len(xs)", lambda xs, k: len(xs), reduction=True),
    _p("max", "list", "{verb} the maximum (0 if the list is empty)", "max(xs) if xs else 0",
       lambda xs, k: max(xs) if xs else 0, reduction=True),
    _p("min", "list", "{verb} the minimum (0 if the list is empty)", "min(xs) if xs else 0",
       lambda xs, k: min(xs) if xs else 0, reduction=True),
)

STRING_PRIMITIVES: tuple[Primitive, ...] = (
    _p("str_upper", "str", "convert it to upper case", "s = s.upper()", lambda s, k: s.upper()),
    _p("str_lower", "str", "convert it to lower case", "s = s.lower()", lambda s, k: s.lower()),
    _p("str_swapcase", "str", "swap the case of every letter", "s = s.swapcase()", lambda s, k: s.swapcase()),
    _p("str_reverse", "str", "reverse it", "s = s[::-1]", lambda s, k: s[::-1]),
    _p("str_remove_vowels", "str", "remove the vowels", f"s = ''.join(c for c in s if c not in '{_VOWELS}')",
       lambda s, k: "".join(c for c in s if c not in _VOWELS)),
    _p("str_replace", "str", "replace every {k[0]} with {k[1]}", "s = s.replace({k[0]}, {k[1]})",
       lambda s, k: s.replace(k[0], k[1]),
       [(a, b) for a in _REPLACE_FROM for b in _REPLACE_TO]),
    _p("str_keep_letters", "str", "keep only the letters", "s = ''.join(c for c in s if c.isalpha())",
       lambda s, k: "".join(c for c in s if c.isalpha())),
    _p("str_keep_digits", "str", "keep only the digits", "s = ''.join(c for c in s if c.isdigit())",
       lambda s, k: "".join(c for c in s if c.isdigit())),
    _p("str_remove_spaces", "str", "remove the spaces", "s = s.replace(' ', '')",
       lambda s, k: s.replace(" ", "")),
    _p("str_double", "str", "duplicate every character", "s = ''.join(c + c for c in s)",
       lambda s, k: "".join(c + c for c in s)),
    _p("str_take", "str", "keep the first {k} characters", "s = s[:{k}]", lambda s, k: s[:k], range(1, 5)),
    _p("str_drop", "str", "drop the first {k} characters", "s = s[{k}:]", lambda s, k: s[k:], range(1, 4)),
    _p("str_sort", "str", "sort the characters", "s = ''.join(sorted(s))", lambda s, k: "".join(sorted(s))),
    _p("str_dedup", "str", "remove repeated characters keeping first occurrences", "s = ''.join(dict.fromkeys(s))",
       lambda s, k: "".join(dict.fromkeys(s))),
)

STRING_REDUCTIONS: tuple[Primitive, ...] = (
    _p("str_len", "str", "{verb} the length", "len(s)", lambda s, k: len(s), reduction=True),
    _p("str_count", "str", "{verb} the number of {k} characters", "s.count({k})",
       lambda s, k: s.count(k), _COUNT_CHARS, reduction=True),
)

# Underspecified phrases (issue 17; design.md: "problems whose statement leaves something to infer from the
# public examples or from refinement feedback ... are what make refinement and multi-agent search matter").
# A primitive with a *twin* has a second, vague phrase that fits both readings: "sort the numbers in the order
# the examples show" is sort_asc or sort_desc, and only the public examples (and the feedback of a failed
# attempt) tell which. A problem renders one such step vaguely with probability ``vague_fraction``; its
# composition stays the name of the true reading (so split ownership and disjointness are unchanged), the
# public examples always tell the readings apart, and so do the hidden tests. Then a fresh sample that only
# reads the statement has about one chance in two on that step, while a refinement that sees the failed
# program (reading A) and its feedback can pick reading B: a mechanism by which deepening pays.
TWINS: dict[str, str] = {
    "sort_asc": "sort_desc", "sort_desc": "sort_asc", "keep_even": "keep_odd", "keep_odd": "keep_even",
    "add": "sub", "sub": "add", "keep_gt": "keep_lt", "keep_lt": "keep_gt", "max": "min", "min": "max",
    "str_upper": "str_lower", "str_lower": "str_upper",
}
_VAGUE_BY_PAIR: dict[frozenset[str], str] = {
    frozenset({"sort_asc", "sort_desc"}): "sort the numbers in the order the examples show",
    frozenset({"keep_even", "keep_odd"}): "keep only the numbers of the parity the examples show",
    frozenset({"add", "sub"}): "shift every number by {k} in the direction the examples show",
    frozenset({"keep_gt", "keep_lt"}): "keep only the numbers on the side of {k} the examples show",
    frozenset({"max", "min"}): "{verb} the extreme the examples show (0 if the list is empty)",
    frozenset({"str_upper", "str_lower"}): "convert it to the case the examples show",
}
VAGUE_PHRASES: dict[str, str] = {name: _VAGUE_BY_PAIR[frozenset({name, twin})] for name, twin in TWINS.items()}

_ALL = LIST_PRIMITIVES + LIST_REDUCTIONS + STRING_PRIMITIVES + STRING_REDUCTIONS
_BY_NAME: dict[str, Primitive] = {p.name: p for p in _ALL}
assert len(_BY_NAME) == len(_ALL), "primitive names must be unique"
_SORTS = {"sort_asc", "sort_desc", "str_sort"}
_CASES = {"str_upper", "str_lower"}


# ----------------------------------------------------------------------------------------------------
# Compositions and their split ownership
# ----------------------------------------------------------------------------------------------------

def _pools(kind: str) -> tuple[tuple[Primitive, ...], tuple[Primitive, ...]]:
    return (LIST_PRIMITIVES, LIST_REDUCTIONS) if kind == "list" else (STRING_PRIMITIVES, STRING_REDUCTIONS)


def _valid(comp: Sequence[str]) -> bool:
    """Structural filter: no step repeated back-to-back, no sort directly after a sort and no upper/lower
    case directly after the other (the first step would be dead code). Semantic degeneracy is caught later
    on the tests."""
    for a, b in zip(comp, comp[1:]):
        if a == b or (a in _SORTS and b in _SORTS) or (a in _CASES and b in _CASES):
            return False
    return True


def _comp_hash(seed: int, comp: Sequence[str]) -> float:
    h = hashlib.blake2b(f"minicode|{seed}|{'/'.join(comp)}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _n_candidates(kind: str, depth: int) -> int:
    trans, reds = _pools(kind)
    return len(trans) ** (depth - 1) * (len(trans) + len(reds))


def _enumerate(kind: str, depth: int) -> list[tuple[str, ...]]:
    trans, reds = _pools(kind)
    tn = [p.name for p in trans]
    last = tn + [p.name for p in reds]
    out = []
    for head in itertools.product(tn, repeat=depth - 1):
        for tail in last:
            comp = head + (tail,)
            if _valid(comp):
                out.append(comp)
    return out


def _requesting(depths_by_split: dict[str, tuple[int, ...]], depth: int) -> list[str]:
    return [s for s in SPLITS if depth in depths_by_split[s]]


def _shares(splits: list[str]) -> list[float]:
    total = sum(SPLIT_SHARES[s] for s in splits)
    return [SPLIT_SHARES[s] / total for s in splits]


class _CompositionSampler:
    """Owns the deterministic composition → split assignment for one seed and depth configuration."""

    def __init__(self, seed: int, depths_by_split: dict[str, tuple[int, ...]]):
        self.seed = seed
        self.depths_by_split = depths_by_split
        self._pool: dict[tuple[str, int, str], list[tuple[str, ...]]] = {}
        for kind in ("list", "str"):
            for depth in sorted({d for ds in depths_by_split.values() for d in ds}):
                if _n_candidates(kind, depth) <= _ENUMERATE_LIMIT:
                    self._partition(kind, depth)
        self._sets = {k: set(v) for k, v in self._pool.items()}

    def _partition(self, kind: str, depth: int) -> None:
        splits = _requesting(self.depths_by_split, depth)
        comps = sorted(_enumerate(kind, depth), key=lambda c: _comp_hash(self.seed, c))
        n = len(comps)
        if n < len(splits):
            raise ValueError(f"minicode: only {n} {kind} compositions of depth {depth} for splits {splits}")
        # Consecutive blocks by cumulative share; every requesting split gets at least one composition.
        bounds, acc = [], 0.0
        for share in _shares(splits)[:-1]:
            acc += share
            bounds.append(round(acc * n))
        cuts = [0]
        for i, b in enumerate(bounds):
            lo = cuts[-1] + 1
            hi = n - (len(splits) - 1 - i)
            cuts.append(min(max(b, lo), hi))
        cuts.append(n)
        for s, a, b in zip(splits, cuts, cuts[1:]):
            self._pool[(kind, depth, s)] = comps[a:b]

    def owner(self, kind: str, comp: tuple[str, ...]) -> str:
        """The split that owns ``comp``: explicit blocks for enumerated pools, else the hash threshold."""
        depth = len(comp)
        for s in SPLITS:
            if comp in self._sets.get((kind, depth, s), ()):
                return s
        if any((kind, depth, s) in self._pool for s in SPLITS):
            raise KeyError(f"{comp} is not a valid {kind} composition of depth {depth}")
        splits = _requesting(self.depths_by_split, depth)
        if not splits:
            raise KeyError(f"no split requests depth {depth}")
        u, acc = _comp_hash(self.seed, comp), 0.0
        for s, share in zip(splits, _shares(splits)):
            acc += share
            if u < acc:
                return s
        return splits[-1]

    def sample(self, rng: random.Random, kind: str, depth: int, split: str) -> tuple[str, ...]:
        pool = self._pool.get((kind, depth, split))
        if pool is not None:
            return pool[rng.randrange(len(pool))]
        trans, reds = _pools(kind)
        last = trans + reds
        for _ in range(100_000):
            comp = tuple(rng.choice(trans).name for _ in range(depth - 1)) + (rng.choice(last).name,)
            if _valid(comp) and self.owner(kind, comp) == split:
                return comp
        raise RuntimeError(f"minicode: could not sample a {kind} composition of depth {depth} for {split}")


# ----------------------------------------------------------------------------------------------------
# Inputs and tests
# ----------------------------------------------------------------------------------------------------

def _rand_list(rng: random.Random, lo_len: int = 0, hi_len: int = _MAX_LEN) -> list[int]:
    return [rng.randint(*_VALUE_RANGE) for _ in range(rng.randint(lo_len, hi_len))]


def _rand_str(rng: random.Random, lo_len: int = 0, hi_len: int = _MAX_LEN) -> str:
    return "".join(rng.choice(_STR_POOL) for _ in range(rng.randint(lo_len, hi_len)))


def _list_edge_cases(rng: random.Random) -> list[list[int]]:
    vals = [rng.randint(*_VALUE_RANGE) for _ in range(3)]
    dup = [rng.choice(vals) for _ in range(rng.randint(4, 7))]
    if len(set(dup)) == len(dup):
        dup.append(dup[0])
    return [
        [],
        [rng.randint(*_VALUE_RANGE)],
        dup,  # duplicates
        [rng.randint(-9, -1) for _ in range(rng.randint(3, 6))],  # all negative
        [rng.randint(-9, 9) for _ in range(_MAX_LEN)],  # longest
    ]


def _str_edge_cases(rng: random.Random) -> list[str]:
    chars = [rng.choice("abeoxy") for _ in range(2)]
    dup = "".join(rng.choice(chars) for _ in range(rng.randint(4, 7)))
    mixed = "".join(rng.choice("aAeEbBxX01 ") for _ in range(rng.randint(5, 8)))
    return ["", rng.choice(_STR_POOL.strip()), dup, mixed, _rand_str(rng, _MAX_LEN, _MAX_LEN)]


def _apply(comp: Sequence[tuple[Primitive, Any]], value: Any) -> Any:
    for prim, k in comp:
        value = prim.fn(value, k)
    return value


def _stdin_in(xs: list[int]) -> str:
    return " ".join(map(str, xs)) + "\n"


def _stdin_out(result: Any) -> str:
    if isinstance(result, list):
        return " ".join(map(str, result)) + "\n"
    return f"{result}\n"


def _norm_text(text: str) -> list[str]:
    """Whitespace normalisation used to compare stdout: trailing spaces and blank tail lines ignored."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _key(v: Any) -> str:
    return repr(v)


@dataclass
class _Spec:
    family: str  # "list" | "string" | "stdin"
    steps: list[tuple[Primitive, Any]]  # transforms then optional reduction
    vague: int | None = None  # index of the step rendered with its vague phrase (TWINS), if any

    def twin(self) -> "_Spec | None":
        """The other reading of the vague step (same constant), or None without a vague step."""
        if self.vague is None:
            return None
        steps = list(self.steps)
        prim, k = steps[self.vague]
        steps[self.vague] = (_BY_NAME[TWINS[prim.name]], k)
        return _Spec(self.family, steps, self.vague)


def _kind(family: str) -> str:
    return "str" if family == "string" else "list"


def _out_key(spec: _Spec, o: Any) -> str:
    """An output as the judge sees it: normalised stdout text for stdin problems, the value otherwise."""
    return repr(_norm_text(_stdin_out(o))) if spec.family == "stdin" else _key(o)


def _discriminates(spec: _Spec, hidden_in: list[Any], hidden_out: list[Any], n_hidden: int) -> bool:
    """The hidden tests tell wrong programs from right ones (method.md §2: hidden tests decide correctness)."""
    if len({_key(o) for o in hidden_out}) <= 1:
        return False
    # Every step must matter: if leaving one transform out gives the same hidden outputs, the tests cannot
    # check that phrase (e.g. "convert to upper case, then return the length"), so the problem is rejected.
    for i, (prim, _) in enumerate(spec.steps):
        if prim.reduction:
            continue
        rest = spec.steps[:i] + spec.steps[i + 1:]
        if all(_key(_apply(rest, v)) == _key(o) for v, o in zip(hidden_in, hidden_out)):
            return False
    is_str = spec.family == "string"
    empty: Any = "" if is_str else []
    trivial_passes = max(
        sum(_key(o) == _key(i) for i, o in zip(hidden_in, hidden_out)),  # return the input unchanged
        sum(_key(o) == _key(empty) for o in hidden_out),  # return an empty value
        sum(_key(o) == _key(0) for o in hidden_out),  # return 0
    )
    if spec.family == "stdin":  # echo the input / print nothing, compared as normalised text
        outs = [_norm_text(_stdin_out(o)) for o in hidden_out]
        trivial_passes = max(
            trivial_passes,
            sum(o == _norm_text(_stdin_in(i)) for i, o in zip(hidden_in, outs)),
            sum(o == [] for o in outs),
            sum(o == ["0"] for o in outs),  # print 0 (also matches a one-element list [0])
        )
    return trivial_passes <= TRIVIAL_MAX_FRACTION * n_hidden


def _rebalance_constant(spec: _Spec, hidden_in: list[Any], hidden_out: list[Any], n_edge: int,
                        seen: set[str], n_hidden: int) -> tuple[list[Any], list[Any]]:
    """Make "return a constant" fail most hidden tests (issue 5) when the problem's output range is small
    (e.g. "replace every number greater than 1 by 1, then print the maximum" is mostly 1).

    While one output is the answer to more than ``TRIVIAL_MAX_FRACTION`` of the hidden tests, a random
    (non-edge-case) hidden input with that output is replaced by a fresh input with another output. The
    draws come from a generator seeded by the problem's content, never from the split's generator, so every
    other problem of the split is unchanged (and so are this problem's statement, reference and public
    examples: the warm-start and tokenizer caches, keyed on those, stay valid). If the output range is too
    small to get under the bound (e.g. "keep the first 1 numbers, then return the count": 0 only for the empty
    list), the original tests are kept and the problem stays as it is (rare, warm-up only with the default
    config: tests/test_minicode.py bounds it). Rejecting such problems instead would shift every later
    problem of the split — a change for a future MINICODE_VERSION together with new caches."""
    limit = TRIVIAL_MAX_FRACTION * n_hidden
    counts: dict[str, int] = {}
    for o in hidden_out:
        counts[_out_key(spec, o)] = counts.get(_out_key(spec, o), 0) + 1
    dominant, top = max(counts.items(), key=lambda kv: kv[1])
    if top <= limit:
        return hidden_in, hidden_out
    is_str = spec.family == "string"
    side = random.Random(f"minicode-rebalance|{_key(hidden_in)}|{[(p.name, k) for p, k in spec.steps]}")
    new_in, new_out = list(hidden_in), list(hidden_out)
    used = set(seen)
    while top > limit:
        idx = [i for i in range(n_edge, len(new_in)) if _out_key(spec, new_out[i]) == dominant]
        if not idx:
            break
        i = side.choice(idx)
        found = None
        for _ in range(500):
            v = _rand_str(side) if is_str else _rand_list(side)
            if _key(v) in used:
                continue
            o = _apply(spec.steps, v)
            if _out_key(spec, o) != dominant:
                found = (v, o)
                break
        if found is None:
            break
        used.add(_key(found[0]))
        new_in[i], new_out[i] = found
        top -= 1
    if top > limit or not _discriminates(spec, new_in, new_out, n_hidden):
        return hidden_in, hidden_out
    return new_in, new_out


def _build_tests(rng: random.Random, spec: _Spec, n_public: int, n_hidden: int
                 ) -> tuple[list[TestCase], list[TestCase]] | None:
    """Hidden tests (edge cases first, then random) and distinct public examples; None if degenerate."""
    is_str = spec.family == "string"
    edge = _str_edge_cases(rng) if is_str else _list_edge_cases(rng)
    gen = (lambda: _rand_str(rng)) if is_str else (lambda: _rand_list(rng))
    seen: set[str] = set()
    hidden_in: list[Any] = []
    for v in edge[:n_hidden]:
        if _key(v) not in seen:
            seen.add(_key(v))
            hidden_in.append(v)
    for _ in range(50 * n_hidden):
        if len(hidden_in) >= n_hidden:
            break
        v = gen()
        if _key(v) not in seen:
            seen.add(_key(v))
            hidden_in.append(v)
    if len(hidden_in) < n_hidden:
        return None
    # Primitives never mutate their argument (each builds a new value), so no copies are needed.
    hidden_out = [_apply(spec.steps, v) for v in hidden_in]

    if not _discriminates(spec, hidden_in, hidden_out, n_hidden):
        return None

    empty: Any = "" if is_str else []
    # Public examples: distinct from hidden ones, preferably informative (output differs from the input
    # and is not empty), since the statement is shown together with them.
    public_in: list[Any] = []
    for _ in range(n_public):
        best = None
        for attempt in range(30):
            v = _rand_str(rng, 3, 7) if is_str else _rand_list(rng, 3, 6)
            if _key(v) in seen:
                continue
            out = _apply(spec.steps, v)
            best = v
            if _key(out) != _key(v) and _key(out) not in (_key(empty), _key(0)):
                break
        if best is None:
            return None
        seen.add(_key(best))
        public_in.append(best)
    public_out = [_apply(spec.steps, v) for v in public_in]
    alt = spec.twin()
    if alt is not None:
        # A vague step: the public examples must tell its two readings apart (that is where the information
        # is), and so must the hidden tests (the other reading must fail).
        if all(_out_key(spec, _apply(alt.steps, v)) == _out_key(spec, o) for v, o in zip(public_in, public_out)):
            return None
        if all(_out_key(spec, _apply(alt.steps, v)) == _out_key(spec, o) for v, o in zip(hidden_in, hidden_out)):
            return None
    # After the public examples, so that the split's generator is used exactly as before (see docstring).
    hidden_in, hidden_out = _rebalance_constant(spec, hidden_in, hidden_out, len(edge[:n_hidden]),
                                                seen, n_hidden)

    def case(i: Any, o: Any) -> TestCase:
        if spec.family == "stdin":
            return TestCase(input=_stdin_in(i), output=_stdin_out(o))
        return TestCase(input=[i], output=o)

    return ([case(i, o) for i, o in zip(public_in, public_out)],
            [case(i, o) for i, o in zip(hidden_in, hidden_out)])


def _render(spec: _Spec) -> tuple[str, str, str]:
    """(statement, reference solution, starter code)."""
    phrases, lines = [], []
    red = spec.steps[-1][0] if spec.steps and spec.steps[-1][0].reduction else None
    verb = "print" if spec.family == "stdin" else "return"
    for i, (prim, k) in enumerate(spec.steps):
        ph, ln = prim.render(k, verb, vague=i == spec.vague)
        phrases.append(ph)
        lines.append(ln)
    if red is None:
        phrases.append({"list": "return the resulting list", "string": "return the result",
                        "stdin": "print the resulting numbers separated by spaces"}[spec.family])
    steps_code = lines[:-1] if red is not None else lines
    final = lines[-1] if red is not None else None
    joined = ", then ".join(phrases)
    if spec.family == "list":
        statement = f"Given a list of integers xs: {joined}."
        body = steps_code + [f"return {final}" if final else "return xs"]
        return statement, "\n".join(["def solve(xs):"] + ["    " + b for b in body]), "def solve(xs):"
    if spec.family == "string":
        statement = f"Given a string s: {joined}."
        body = steps_code + [f"return {final}" if final else "return s"]
        return statement, "\n".join(["def solve(s):"] + ["    " + b for b in body]), "def solve(s):"
    statement = f"Read a line of space-separated integers xs: {joined}."
    body = (["xs = list(map(int, input().split()))"] + steps_code
            + [f"print({final})" if final else "print(' '.join(map(str, xs)))"])
    return statement, "\n".join(body), ""


def _draw_constant(rng: random.Random, prim: Primitive) -> Any:
    return rng.choice(prim.k_choices) if prim.k_choices else None


def _draw_vague(rng: random.Random, steps: Sequence[tuple[Primitive, Any]], vague_fraction: float) -> int | None:
    """With probability ``vague_fraction``, one step that has a twin (uniformly among them) is rendered
    vaguely. Draws nothing from ``rng`` when ``vague_fraction`` is 0 (the v4 problems stay reproducible)."""
    if vague_fraction <= 0:
        return None
    cands = [i for i, (prim, _) in enumerate(steps) if prim.name in TWINS]
    if not cands or rng.random() >= vague_fraction:
        return None
    return rng.choice(cands)


def _vague_meta(spec: _Spec) -> dict[str, Any] | None:
    if spec.vague is None:
        return None
    name = spec.steps[spec.vague][0].name
    return {"step": spec.vague, "reading": name, "twin": TWINS[name]}


def alternative_solution(problem: Problem) -> str | None:
    """The reference of ``problem`` with its vague step read the other way (the twin primitive, same
    constant): the natural wrong answer to an underspecified statement. None for a problem without a vague
    step (or not generated by minicode)."""
    meta = problem.meta or {}
    vague = meta.get("vague")
    if not vague or meta.get("family") not in ("list", "string", "stdin"):
        return None
    consts = [tuple(k) if isinstance(k, list) else k for k in meta["constants"]]
    spec = _Spec(meta["family"], [(_BY_NAME[n], k) for n, k in zip(meta["composition"], consts)], int(vague["step"]))
    return _render(spec.twin())[1]  # type: ignore[arg-type]


def _generate_split(split: str, n: int, depths: tuple[int, ...], seed: int, sampler: _CompositionSampler,
                    stdin_fraction: float, string_fraction: float, n_public: tuple[int, int],
                    n_hidden: int, vague_fraction: float = 0.0) -> list[Problem]:
    rng = random.Random(f"minicode|{seed}|{split}")
    width = max(4, len(str(max(n - 1, 0))))
    problems: list[Problem] = []
    statements: set[str] = set()
    for idx in range(n):
        r = rng.random()
        family = "stdin" if r < stdin_fraction else ("string" if r < stdin_fraction + string_fraction else "list")
        depth = rng.choice(depths)
        npub = rng.randint(*n_public)
        chosen = None
        for attempt in range(_MAX_ATTEMPTS):
            comp = sampler.sample(rng, _kind(family), depth, split)
            steps = [(_BY_NAME[name], _draw_constant(rng, _BY_NAME[name])) for name in comp]
            spec = _Spec(family, steps, _draw_vague(rng, steps, vague_fraction))
            statement, ref, starter = _render(spec)
            # Prefer a statement not yet used in this split; small pools (depth 1) force repeats, which
            # are then accepted (with fresh tests) after a few tries.
            if statement in statements and attempt < _DUPLICATE_TRIES:
                continue
            tests = _build_tests(rng, spec, npub, n_hidden)
            if tests is not None:
                chosen = (comp, spec, tests, statement, ref, starter)
                break
        if chosen is None:
            raise RuntimeError(f"minicode: no non-degenerate {family} problem of depth {depth} for {split}")
        comp, spec, (pub, hid), statement, ref, starter = chosen
        statements.add(statement)
        problems.append(Problem(
            id=f"minicode/{split}/{idx:0{width}d}",
            statement=statement,
            mode="stdin" if family == "stdin" else "functional",
            public_tests=tuple(pub),
            hidden_tests=tuple(hid),
            entry_point=None if family == "stdin" else "solve",
            starter_code=starter,
            difficulty=depth,
            source="minicode",
            reference_solution=ref,
            meta={"composition": tuple(comp), "family": family, "depth": depth, "split": split,
                  "constants": [k for _, k in spec.steps], "vague": _vague_meta(spec)},
        ))
    return problems


def _generate_iid(n: int, train: Sequence[Problem], depths: tuple[int, ...], seed: int, n_public: tuple[int, int],
                  n_hidden: int) -> list[Problem]:
    """The ``test_iid`` split: unseen *instances* of the compositions of the ``train`` split (never of warm-up:
    train compositions are disjoint from warm-up ones). Each problem copies the composition and family of a
    train problem drawn uniformly (so compositions come in the proportions RL sees them), with constants and
    tests drawn anew from ``minicode|{seed}|test_iid``; its statement must differ from every train statement
    (and preferably from the other test_iid ones): a composition without constants can give no new
    statement in its family and is skipped. ``meta["source_train_id"]``: the train problem it was derived from."""
    rng = random.Random(f"minicode|{seed}|test_iid")
    pool = [p for p in train if int(p.meta["depth"]) in set(depths)]
    if not pool:
        raise ValueError(f"minicode: no train problems at test_iid depths {list(depths)} (train has depths "
                         f"{sorted({int(p.meta['depth']) for p in train})})")
    pool = [p for p in pool if any(_BY_NAME[name].k_choices for name in p.meta["composition"])]
    if not pool:
        raise ValueError("minicode: test_iid needs train compositions with a constant (none at the test_iid depths)")
    train_statements = {p.statement for p in train}
    taken: set[str] = set()
    width = max(4, len(str(max(n - 1, 0))))
    out: list[Problem] = []
    for idx in range(n):
        chosen = None
        for attempt in range(_MAX_ATTEMPTS):
            src = pool[rng.randrange(len(pool))]
            family, comp = src.meta["family"], tuple(src.meta["composition"])
            vague = (src.meta.get("vague") or {}).get("step")  # the same statement form as the train problem
            for _ in range(10):
                steps = [(_BY_NAME[name], _draw_constant(rng, _BY_NAME[name])) for name in comp]
                spec = _Spec(family, steps, vague)
                statement, ref, starter = _render(spec)
                if statement not in train_statements:
                    break
            else:
                continue
            # Prefer a statement new to test_iid too; a small train split forces repeats (with fresh tests).
            if statement in taken and attempt < _DUPLICATE_TRIES:
                continue
            tests = _build_tests(rng, spec, rng.randint(*n_public), n_hidden)
            if tests is not None:
                chosen = (src, comp, spec, tests, statement, ref, starter)
                break
        if chosen is None:
            raise RuntimeError("minicode: no new non-degenerate instance of a train composition for test_iid")
        src, comp, spec, (pub, hid), statement, ref, starter = chosen
        taken.add(statement)
        out.append(Problem(
            id=f"minicode/test_iid/{idx:0{width}d}", statement=statement, mode=src.mode, public_tests=tuple(pub),
            hidden_tests=tuple(hid), entry_point=src.entry_point, starter_code=starter, difficulty=len(comp),
            source="minicode", reference_solution=ref,
            meta={"composition": comp, "family": family, "depth": len(comp), "split": "test_iid",
                  "constants": [k for _, k in spec.steps], "vague": _vague_meta(spec), "source_train_id": src.id},
        ))
    return out


def generate_minicode(seed: int = 0, n_warmup: int = 2000, n_train: int = 512, n_test: int = 128,
                      warmup_depths: Sequence[int] = (1, 2), train_depths: Sequence[int] = (1, 2, 3),
                      test_depths: Sequence[int] = (2, 3),
                      stdin_fraction: float = 0.2, string_fraction: float = 0.2,
                      n_public: tuple[int, int] = (2, 3), n_hidden: int = 10,
                      n_test_iid: int = 0, test_iid_depths: Sequence[int] | None = None,
                      vague_fraction: float = 0.0) -> dict[str, list[Problem]]:
    """Generate the minicode splits ``{"warmup", "train", "test"}`` (and ``"test_iid"`` when ``n_test_iid``
    > 0) deterministically from ``seed``.

    Compositions are disjoint across warmup / train / test (see the module docstring): ``test`` measures
    generalisation to unseen compositions. ``test_iid`` holds unseen instances (new constants, new tests)
    of train compositions at ``test_iid_depths`` (default: ``train_depths``), see :func:`_generate_iid`:
    it measures what RL on the train problems transfers to new problems of the same kinds. Adding it
    changes no other split. Each problem has ``n_public`` (inclusive range) public tests and ``n_hidden``
    hidden tests including edge cases (empty input, single element, duplicates, all-negative).
    ``vague_fraction``: share of the problems with a step that has a twin (:data:`TWINS`) in which one such
    step gets its underspecified phrase (the public examples tell the reading; 0 = every statement fully
    specified, the v4 problems).
    ``meta`` = {"composition", "family", "depth", "split", "constants", "vague"}; ``vague`` is None or
    {"step", "reading", "twin"} (see :func:`alternative_solution`).
    """
    if not 0 <= vague_fraction <= 1:
        raise ValueError(f"minicode: vague_fraction must be in [0, 1], got {vague_fraction}")
    if n_hidden < 5:
        raise ValueError("minicode: n_hidden must be >= 5 (the edge cases alone take 5)")
    if not (0 <= stdin_fraction and 0 <= string_fraction and stdin_fraction + string_fraction <= 1):
        raise ValueError("minicode: stdin_fraction and string_fraction must be >= 0 and sum to <= 1")
    lo, hi = n_public
    if not 1 <= lo <= hi:
        raise ValueError(f"minicode: n_public must be a range (lo, hi) with 1 <= lo <= hi, got {n_public}")
    depths_by_split = {"warmup": tuple(warmup_depths), "train": tuple(train_depths), "test": tuple(test_depths)}
    for s, ds in depths_by_split.items():
        if not ds or any(int(d) != d or d < 1 for d in ds):
            raise ValueError(f"minicode: {s}_depths must be a non-empty sequence of ints >= 1, got {ds}")
    if int(n_test_iid) != n_test_iid or n_test_iid < 0:
        raise ValueError(f"minicode: n_test_iid must be an integer >= 0, got {n_test_iid}")
    iid_depths = tuple(train_depths if test_iid_depths is None else test_iid_depths)
    if n_test_iid and (not iid_depths or not set(iid_depths) <= set(depths_by_split["train"])):
        raise ValueError(f"minicode: test_iid_depths {list(iid_depths)} must be train depths "
                         f"{list(depths_by_split['train'])} (test_iid holds instances of train compositions)")
    sampler = _CompositionSampler(seed, depths_by_split)
    sizes = {"warmup": n_warmup, "train": n_train, "test": n_test}
    out = {
        s: _generate_split(s, sizes[s], depths_by_split[s], seed, sampler, stdin_fraction, string_fraction,
                           (lo, hi), n_hidden, vague_fraction)
        for s in SPLITS
    }
    if n_test_iid:
        out["test_iid"] = _generate_iid(int(n_test_iid), out["train"], iid_depths, seed, (lo, hi), n_hidden)
    return out


# ----------------------------------------------------------------------------------------------------
# In-process verification and corpus
# ----------------------------------------------------------------------------------------------------

def _run_reference(problem: Problem, test: TestCase) -> Any:
    code = problem.reference_solution or ""
    if problem.mode == "functional":
        ns: dict[str, Any] = {"__name__": "__minicode__"}
        exec(compile(code, problem.id, "exec"), ns)
        return ns[problem.entry_point](*copy.deepcopy(test.input))  # type: ignore[index]
    buf = io.StringIO()
    old_stdin = sys.stdin
    try:
        sys.stdin = io.StringIO(test.input)
        with contextlib.redirect_stdout(buf):
            exec(compile(code, problem.id, "exec"), {"__name__": "__main__"})
    finally:
        sys.stdin = old_stdin
    return buf.getvalue()


def _matches(problem: Problem, got: Any, expected: Any, tol: float | None = None) -> bool:
    """The sandbox's judgement of ``got`` (one judge, ``mars2.sandbox.executor``): stdin output token-wise
    (``outputs_equal``); a functional result through the same codec the sandbox's child uses, then
    ``values_equal`` (Python equality, tuples as lists, floats within ``tol``, default the sandbox's
    ``float_tol``). So a reference verified here passes in the sandbox, and vice versa."""
    from mars2.sandbox import harness
    from mars2.sandbox.executor import SandboxConfig, normalise_expected, outputs_equal, values_equal

    tol = SandboxConfig().float_tol if tol is None else float(tol)
    if problem.mode == "stdin":
        return outputs_equal(str(got), str(expected), tol)
    try:
        actual = harness.decode(harness.loads(harness.dumps(harness.encode(got))))
    except Exception:  # noqa: BLE001 - a result the sandbox could not serialise fails there too
        return False
    return values_equal(actual, normalise_expected(expected), tol)


def verify_problems(problems: Iterable[Problem], tol: float | None = None) -> list[str]:
    """Run each reference solution in-process on its own public and hidden tests (fresh namespace per test),
    judged as the sandbox judges (:func:`_matches`: ``mars2.sandbox.executor``'s comparison, ``tol`` = its
    ``float_tol`` unless given).

    Returns one error string per failing (problem, test); empty when all references are correct. Not a
    sandbox: only for our own trusted references.
    """
    errors: list[str] = []
    for p in problems:
        if not p.reference_solution:
            errors.append(f"{p.id}: no reference solution")
            continue
        for tag, tests in (("public", p.public_tests), ("hidden", p.hidden_tests)):
            for i, t in enumerate(tests):
                try:
                    got = _run_reference(p, t)
                except Exception as e:  # noqa: BLE001 - report, never raise
                    errors.append(f"{p.id}: {tag} test {i} raised {type(e).__name__}: {e}")
                    continue
                if not _matches(p, got, t.output, tol):
                    errors.append(f"{p.id}: {tag} test {i} expected {t.output!r}, got {got!r}")
    return errors


def probe_tests(problem: Problem, n: int = 8, seed: int = 0) -> list[TestCase]:
    """``n`` extra probe inputs for a minicode problem, outside its tests, with the reference's outputs.

    Used by the behavioural diversity metrics (method.md §7: EC@K, DA@K need a fixed probe input set; two
    correct programs agree on every test by definition, so probes beyond the tests are what can tell them
    apart). Inputs are drawn like the random hidden tests but longer (up to 2x the usual length), from a
    generator seeded by ``(seed, problem.id)``: the same probes for every candidate and every run. A problem
    that is not a minicode problem with a reference solution gets no probes (``[]``)."""
    family = (problem.meta or {}).get("family")
    if n <= 0 or family not in ("list", "string", "stdin") or not problem.reference_solution:
        return []
    rng = random.Random(f"minicode-probe|{seed}|{problem.id}")
    seen = {_key(t.input) for t in problem.all_tests}
    out: list[TestCase] = []
    for _ in range(50 * n):
        if len(out) >= n:
            break
        v: Any = _rand_str(rng, 0, 2 * _MAX_LEN) if family == "string" else _rand_list(rng, 0, 2 * _MAX_LEN)
        inp: Any = _stdin_in(v) if family == "stdin" else [v]
        if _key(inp) in seen:
            continue
        seen.add(_key(inp))
        try:
            got = _run_reference(problem, TestCase(inp, None))
        except Exception:  # noqa: BLE001 - a reference failing on a probe: skip that probe
            continue
        out.append(TestCase(inp, got))
    return out


def corpus_texts(problems: Iterable[Problem]) -> list[str]:
    """Statements and reference solutions (one string each), e.g. for training the tiny BPE tokenizer."""
    out: list[str] = []
    for p in problems:
        out.append(p.statement)
        if p.reference_solution:
            out.append(p.reference_solution)
    return out
