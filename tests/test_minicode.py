"""minicode benchmark (method.md §9, design.md "The miniature world")."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from mars2.tasks import Problem, TestCase
from mars2.tasks.minicode import (
    LIST_PRIMITIVES,
    STRING_PRIMITIVES,
    corpus_texts,
    generate_minicode,
    verify_problems,
)
from mars2.tasks.registry import load_task

SMALL = dict(n_warmup=300, n_train=150, n_test=80)


@pytest.fixture(scope="module")
def default_splits() -> dict[str, list[Problem]]:
    return generate_minicode(seed=0)


@pytest.fixture(scope="module")
def small() -> dict[str, list[Problem]]:
    return generate_minicode(seed=3, **SMALL)


def _fingerprint(splits: dict[str, list[Problem]]) -> list[tuple]:
    return [(p.id, p.statement, p.reference_solution, p.public_tests, p.hidden_tests, p.meta["composition"])
            for s in ("warmup", "train", "test") for p in splits[s]]


def test_sizes_ids_and_depths(default_splits: dict[str, list[Problem]]) -> None:
    assert {k: len(v) for k, v in default_splits.items()} == {"warmup": 2000, "train": 512, "test": 128}
    assert default_splits["test"][7].id == "minicode/test/0007"
    assert default_splits["warmup"][1999].id == "minicode/warmup/1999"
    depths = {"warmup": {1, 2}, "train": {1, 2, 3}, "test": {2, 3}}
    for split, probs in default_splits.items():
        assert {p.difficulty for p in probs} == depths[split]
        for p in probs:
            assert p.difficulty == p.meta["depth"] == len(p.meta["composition"])
            assert isinstance(p.meta["composition"], tuple)
            assert p.meta["split"] == split


def test_deterministic_and_seed_dependent() -> None:
    a = generate_minicode(seed=5, **SMALL)
    b = generate_minicode(seed=5, **SMALL)
    c = generate_minicode(seed=6, **SMALL)
    assert _fingerprint(a) == _fingerprint(b)
    assert _fingerprint(a) != _fingerprint(c)


def test_held_out_compositions_do_not_depend_on_split_sizes() -> None:
    a = generate_minicode(seed=1, n_warmup=50, n_train=50, n_test=60)
    b = generate_minicode(seed=1, n_warmup=400, n_train=10, n_test=60)
    assert _fingerprint({"warmup": [], "train": [], "test": a["test"]}) == \
        _fingerprint({"warmup": [], "train": [], "test": b["test"]})


def test_compositions_disjoint_across_splits(default_splits: dict[str, list[Problem]]) -> None:
    comps = {s: {p.meta["composition"] for p in ps} for s, ps in default_splits.items()}
    assert not comps["test"] & comps["train"]
    assert not comps["test"] & comps["warmup"]
    assert not comps["train"] & comps["warmup"]
    # Also with other depth settings (depth-1 pools are small and shared by warmup and train).
    other = generate_minicode(seed=2, n_warmup=200, n_train=200, n_test=50, warmup_depths=(1, 2, 3),
                              train_depths=(1, 2, 3), test_depths=(1, 3, 4))
    oc = {s: {p.meta["composition"] for p in ps} for s, ps in other.items()}
    assert not (oc["test"] & oc["train"]) and not (oc["test"] & oc["warmup"]) and not (oc["train"] & oc["warmup"])
    assert {p.difficulty for p in other["test"]} == {1, 3, 4}


def test_references_pass_their_own_tests(default_splits: dict[str, list[Problem]]) -> None:
    for probs in default_splits.values():
        assert verify_problems(probs) == []


def test_verify_problems_catches_a_wrong_reference(small: dict[str, list[Problem]]) -> None:
    p = next(p for p in small["test"] if p.mode == "functional" and p.meta["family"] == "list")
    bad = Problem(id="bad", statement=p.statement, mode="functional", public_tests=p.public_tests,
                  hidden_tests=p.hidden_tests, entry_point="solve", reference_solution="def solve(xs):\n    return xs")
    errors = verify_problems([bad])
    assert errors and all(e.startswith("bad:") for e in errors)
    crash = Problem(id="crash", statement="", mode="stdin", public_tests=(TestCase("1\n", "1\n"),),
                    hidden_tests=(), reference_solution="raise ValueError('x')")
    assert verify_problems([crash]) == ["crash: public test 0 raised ValueError: x"]


def test_hand_computed_examples() -> None:
    """The reference code and the test oracle agree with hand-computed values."""
    ns: dict = {}
    stmt_code = {
        "keep only the even numbers": "xs = [x for x in xs if x % 2 == 0]",
        "add 3 to every number": "xs = [x + 3 for x in xs]",
        "remove duplicate numbers keeping first occurrences": "xs = list(dict.fromkeys(xs))",
    }
    by_phrase = {p.render(3)[0]: p for p in LIST_PRIMITIVES}
    for phrase, code in stmt_code.items():
        prim = by_phrase[phrase]
        assert prim.render(3)[1] == code
    exec("def f(xs):\n    xs = [x for x in xs if x >= 0]\n    xs = [x * 2 for x in xs]\n    return sum(xs)", ns)
    assert ns["f"]([1, -2, 3]) == 8
    by_name = {p.name: p for p in LIST_PRIMITIVES + STRING_PRIMITIVES}
    assert by_name["dedup"].fn([3, 1, 3, 2, 1], None) == [3, 1, 2]
    assert by_name["mod"].fn([-3, 4], 3) == [0, 1]
    assert by_name["str_remove_vowels"].fn("Abcde", None) == "bcd"
    assert by_name["str_replace"].fn("abba", ("b", "x")) == "axxa"


def test_statement_and_reference_format(default_splits: dict[str, list[Problem]]) -> None:
    for p in default_splits["train"]:
        lines = p.reference_solution.split("\n")
        fam = p.meta["family"]
        reduce = p.meta["composition"][-1] in {"sum", "count", "max", "min", "str_len", "str_count"}
        # signature/read line + one line per non-reduction primitive + return/print line
        assert len(lines) == 1 + p.difficulty - reduce + 1, p.reference_solution
        if fam == "stdin":
            assert p.mode == "stdin" and p.entry_point is None
            assert lines[0] == "xs = list(map(int, input().split()))"
            assert lines[-1].startswith("print(")
            assert p.statement.startswith("Read a line of space-separated integers xs: ")
        else:
            assert p.mode == "functional" and p.entry_point == "solve"
            assert lines[0] == p.starter_code == ("def solve(s):" if fam == "string" else "def solve(xs):")
            assert all(ln.startswith("    ") for ln in lines[1:])
            assert lines[-1].startswith("    return ")
        assert "import" not in p.reference_solution
        assert p.statement.count(", then ") == p.difficulty - reduce
        assert len(p.statement) < 260
        compile(p.reference_solution, p.id, "exec")


def test_tests_shape_and_edge_cases(default_splits: dict[str, list[Problem]]) -> None:
    for split, probs in default_splits.items():
        for p in probs:
            assert 2 <= len(p.public_tests) <= 3
            assert len(p.hidden_tests) == 10
            inputs = [repr(t.input) for t in p.all_tests]
            assert len(set(inputs)) == len(inputs), "public and hidden tests must not overlap"
            if p.mode == "stdin":
                assert p.hidden_tests[0].input == "\n"
                assert all(t.input.endswith("\n") and t.output.endswith("\n") for t in p.all_tests)
            else:
                assert p.hidden_tests[0].input in ([[]], [""])
                assert all(isinstance(t.input, list) and len(t.input) == 1 for t in p.all_tests)
                assert len(p.hidden_tests[1].input[0]) == 1  # single element
    p = next(p for p in default_splits["test"] if p.meta["family"] == "list")
    assert any(len(t.input[0]) != len(set(t.input[0])) for t in p.hidden_tests), "duplicates edge case"
    assert any(t.input[0] and max(t.input[0]) < 0 for t in p.hidden_tests), "all-negative edge case"


def test_families_present(default_splits: dict[str, list[Problem]]) -> None:
    for split, probs in default_splits.items():
        fams = Counter(p.meta["family"] for p in probs)
        assert set(fams) == {"list", "string", "stdin"}, (split, fams)
    fams = Counter(p.meta["family"] for p in default_splits["warmup"])
    assert 0.12 < fams["stdin"] / 2000 < 0.28 and 0.12 < fams["string"] / 2000 < 0.28
    only_list = generate_minicode(seed=0, n_warmup=50, n_train=10, n_test=10, stdin_fraction=0.0,
                                  string_fraction=0.0)
    assert {p.meta["family"] for ps in only_list.values() for p in ps} == {"list"}


def test_every_primitive_is_taught_in_warmup(default_splits: dict[str, list[Problem]]) -> None:
    seen = {n for p in default_splits["warmup"] for n in p.meta["composition"]}
    names = {p.name for p in LIST_PRIMITIVES + STRING_PRIMITIVES}
    assert names <= seen


def _trivial_outputs(p: Problem, test: TestCase) -> list:
    """What trivial programs would output: the input unchanged, an empty value, 0."""
    if p.mode == "stdin":
        return [test.input, "\n", "0\n"]
    arg = test.input[0]
    return [arg, "" if isinstance(arg, str) else [], 0]


def _same(p: Problem, a, b) -> bool:
    if p.mode == "stdin":
        return a.split() == b.split()
    return a == b and type(a) is type(b)


def test_trivial_programs_fail_most_hidden_tests(default_splits: dict[str, list[Problem]]) -> None:
    for probs in default_splits.values():
        for p in probs:
            outs = [t.output for t in p.hidden_tests]
            assert len({repr(o) for o in outs}) > 1, f"{p.id}: constant output"
            for k in range(3):
                passes = sum(_same(p, _trivial_outputs(p, t)[k], t.output) for t in p.hidden_tests)
                assert passes <= 5, (p.id, k, passes)
    # ...and a trivial program passes few tests overall (hand-checked rate bound).
    total = sum(len(p.hidden_tests) for p in default_splits["test"])
    identity = sum(_same(p, _trivial_outputs(p, t)[0], t.output)
                   for p in default_splits["test"] for t in p.hidden_tests)
    assert identity / total < 0.25


def test_every_step_is_checked_by_the_hidden_tests(default_splits: dict[str, list[Problem]]) -> None:
    """Leaving out any one non-reduction line of the reference changes some hidden output."""
    from mars2.tasks.minicode import LIST_REDUCTIONS, STRING_REDUCTIONS

    reductions = {p.name for p in LIST_REDUCTIONS + STRING_REDUCTIONS}
    for p in default_splits["test"][:60]:
        lines = p.reference_solution.split("\n")
        n_steps = p.difficulty - (p.meta["composition"][-1] in reductions)
        for i in range(1, 1 + n_steps):
            mutant = Problem(id=f"{p.id}-drop{i}", statement="", mode=p.mode, public_tests=(),
                             hidden_tests=p.hidden_tests, entry_point=p.entry_point,
                             reference_solution="\n".join(lines[:i] + lines[i + 1:]))
            assert verify_problems([mutant]), f"{p.id}: line {i} is not checked by any hidden test"


def test_public_examples_are_mostly_informative(default_splits: dict[str, list[Problem]]) -> None:
    informative = sum(
        not _same(p, _trivial_outputs(p, t)[0], t.output) for p in default_splits["test"] for t in p.public_tests
    )
    total = sum(len(p.public_tests) for p in default_splits["test"])
    assert informative / total > 0.9


def test_corpus_texts(small: dict[str, list[Problem]]) -> None:
    texts = corpus_texts(small["warmup"])
    assert len(texts) == 2 * len(small["warmup"])
    assert texts[0] == small["warmup"][0].statement and texts[1] == small["warmup"][0].reference_solution


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_minicode(n_hidden=3)
    with pytest.raises(ValueError):
        generate_minicode(test_depths=())
    with pytest.raises(ValueError):
        generate_minicode(stdin_fraction=0.7, string_fraction=0.5)


def test_registry() -> None:
    splits = load_task("minicode", seed=3, **SMALL)
    assert _fingerprint(splits) == _fingerprint(generate_minicode(seed=3, **SMALL))
    with pytest.raises(ValueError, match="known tasks: deepcoder, humaneval, livecodebench, minicode"):
        load_task("nope")


def _sandbox_or_skip():
    sandbox = pytest.importorskip("mars2.sandbox")
    if not hasattr(sandbox, "Sandbox"):
        pytest.skip("mars2.sandbox.Sandbox not available yet")
    return sandbox.Sandbox


def test_references_pass_in_real_sandbox(small: dict[str, list[Problem]]) -> None:
    Sandbox = _sandbox_or_skip()
    rng = random.Random(0)
    probs = [p for ps in small.values() for p in ps]
    sample = rng.sample(probs, 24)
    sample += [next(p for p in probs if p.mode == "stdin"), next(p for p in probs if p.meta["family"] == "string")]
    evals = Sandbox().evaluate_many([(p, p.reference_solution) for p in sample])
    for p, ev in zip(sample, evals):
        assert ev.public.all_passed and ev.hidden.all_passed, (p.id, ev)
    # and a wrong program fails somewhere
    p = next(p for p in sample if p.meta["family"] == "list")
    (ev,) = Sandbox().evaluate_many([(p, "def solve(xs):\n    return xs")])
    assert not ev.hidden.all_passed


# --- property checks in the real sandbox (issue 5) ------------------------------------------------------

def _trivial_programs(p: Problem) -> dict[str, str]:
    """Programs that do no work: return/print the input, an empty value, 0."""
    if p.mode == "stdin":
        return {"echo": "print(input())", "empty": "print()", "zero": "print(0)"}
    arg = "s" if p.meta["family"] == "string" else "xs"
    empty = "''" if arg == "s" else "[]"
    return {name: f"def solve({arg}):\n    return {body}" for name, body in
            (("echo", arg), ("empty", empty), ("zero", "0"))}


def _memoriser(p: Problem) -> str:
    """A program that knows the public examples by heart (and answers the first one's output otherwise)."""
    if p.mode == "stdin":
        table = {" ".join(t.input.split()): t.output for t in p.public_tests}
        return (f"import sys\nTABLE = {table!r}\nkey = ' '.join(sys.stdin.read().split())\n"
                f"print(TABLE.get(key, {p.public_tests[0].output!r}), end='')")
    table = {repr(t.input[0]): t.output for t in p.public_tests}
    arg = "s" if p.meta["family"] == "string" else "xs"
    return (f"TABLE = {table!r}\ndef solve({arg}):\n"
            f"    return TABLE.get(repr({arg}), {p.public_tests[0].output!r})")


def test_references_pass_and_trivial_programs_fail_in_real_sandbox(default_splits: dict[str, list[Problem]]) -> None:
    """On the whole held-out split: every reference passes all its tests; each trivial program passes at most
    half of any problem's hidden tests (and under a quarter overall); a program that memorised the public
    examples passes them but fails the hidden tests of every problem (public tests give nothing away)."""
    Sandbox = _sandbox_or_skip()
    test = default_splits["test"]
    items, keys = [], []
    for p in test:
        items.append((p, p.reference_solution))
        keys.append((p, "reference"))
        for name, prog in _trivial_programs(p).items():
            items.append((p, prog))
            keys.append((p, name))
        items.append((p, _memoriser(p)))
        keys.append((p, "memo"))
    with Sandbox() as sb:
        evals = sb.evaluate_many(items)
    trivial_hidden: dict[str, list[float]] = {"echo": [], "empty": [], "zero": []}
    for (p, kind), ev in zip(keys, evals):
        if kind == "reference":
            assert ev.public.all_passed and ev.hidden.all_passed, (p.id, ev)
        elif kind == "memo":
            assert ev.public.all_passed, (p.id, "the memoriser must know the public examples")
            assert not ev.hidden.all_passed and ev.hidden.fraction <= 0.5, (p.id, ev.hidden.fraction)
        else:
            assert ev.hidden.fraction <= 0.5, (p.id, kind, ev.hidden.fraction)
            assert not ev.hidden.all_passed
            trivial_hidden[kind].append(ev.hidden.fraction)
    for kind, fracs in trivial_hidden.items():
        assert sum(fracs) / len(fracs) < 0.25, kind


@pytest.mark.slow
def test_all_references_pass_in_real_sandbox(default_splits: dict[str, list[Problem]]) -> None:
    """Every reference of every split (2,640 problems) passes all its tests in the real sandbox."""
    Sandbox = _sandbox_or_skip()
    probs = [p for ps in default_splits.values() for p in ps]
    with Sandbox() as sb:
        evals = sb.evaluate_many([(p, p.reference_solution) for p in probs])
    bad = [p.id for p, ev in zip(probs, evals) if not (ev.public.all_passed and ev.hidden.all_passed)]
    assert bad == []


def test_probe_tests_are_new_inputs_with_reference_outputs(small: dict[str, list[Problem]]) -> None:
    from mars2.tasks.minicode import probe_tests

    for p in small["test"][:20]:
        probes = probe_tests(p, 5, seed=0)
        assert len(probes) == 5 and probes == probe_tests(p, 5, seed=0)
        assert not {repr(t.input) for t in probes} & {repr(t.input) for t in p.all_tests}
        check = Problem(id=p.id, statement="", mode=p.mode, public_tests=(), hidden_tests=tuple(probes),
                        entry_point=p.entry_point, reference_solution=p.reference_solution, meta=p.meta)
        assert verify_problems([check]) == []
    assert probe_tests(small["test"][0], 0) == []
    foreign = Problem(id="x", statement="", mode="functional", public_tests=(), hidden_tests=(), entry_point="f",
                      reference_solution="def f(x):\n    return x")
    assert probe_tests(foreign, 5) == []  # not a minicode problem: no probes


def test_no_constant_answers_most_hidden_tests(default_splits: dict[str, list[Problem]]) -> None:
    """"Return a constant" (any constant, e.g. the output of a public example) fails most hidden tests: on the
    scored splits (train: reward, test: evaluation) for every problem; in warm-up all but problems whose
    output range is inherently tiny ("keep the first 1 numbers, then return the count": 0 only for [])."""
    def worst_constant(p: Problem) -> int:
        outs = [" ".join(t.output.split()) if p.mode == "stdin" else repr(t.output) for t in p.hidden_tests]
        return max(Counter(outs).values())

    for split in ("train", "test"):
        assert [p.id for p in default_splits[split] if worst_constant(p) > 5] == []
    left = [p for p in default_splits["warmup"] if worst_constant(p) > 5]
    assert len(left) <= 0.005 * len(default_splits["warmup"])
    assert all("keep the first 1" in p.statement for p in left)


def test_rebalancing_changes_only_hidden_tests_of_degenerate_problems() -> None:
    """minicode/test/0113 ("... modulo 3, keep only the even numbers, return the maximum") had 8 of 10 hidden
    outputs equal to 2; its hidden tests were redrawn, and nothing else moved."""
    splits = generate_minicode(seed=0)
    p = splits["test"][113]
    assert p.statement.startswith("Given a list of integers xs: replace every number by its remainder modulo 3")
    outs = Counter(repr(t.output) for t in p.hidden_tests)
    assert max(outs.values()) <= 5 and len(p.hidden_tests) == 10
    assert p.hidden_tests[0] == TestCase([[]], 0)  # the edge cases stay first
    assert verify_problems([p]) == []


def test_test_iid_is_new_instances_of_train_compositions() -> None:
    """test_iid (issue 17): unseen instances — new constants, new tests — of compositions of the train split,
    never of warm-up ones; adding it leaves every other split unchanged."""
    base = generate_minicode(seed=4, n_warmup=120, n_train=60, n_test=20, train_depths=(2, 3))
    iid = generate_minicode(seed=4, n_warmup=120, n_train=60, n_test=20, train_depths=(2, 3), n_test_iid=40)
    assert _fingerprint(iid) == _fingerprint(base) and "test_iid" not in base
    probs = iid["test_iid"]
    assert len(probs) == 40 and probs[3].id == "minicode/test_iid/0003"
    assert verify_problems(probs) == []
    train = {p.id: p for p in iid["train"]}
    warm_comps = {p.meta["composition"] for p in iid["warmup"]}
    train_statements = {p.statement for p in iid["train"]}
    for p in probs:
        src = train[p.meta["source_train_id"]]
        assert p.meta["composition"] == src.meta["composition"] and p.meta["family"] == src.meta["family"]
        assert p.meta["composition"] not in warm_comps and p.meta["split"] == "test_iid"
        assert p.statement not in train_statements  # a new instance: new constants, so a new statement
        assert p.meta["constants"] != src.meta["constants"]
        assert p.difficulty in (2, 3)
    assert len({p.statement for p in probs}) == len(probs)
    # tests are drawn anew (not copied from the train problem)
    assert sum(p.hidden_tests == train[p.meta["source_train_id"]].hidden_tests for p in probs) == 0
    assert _fingerprint(generate_minicode(seed=4, n_warmup=120, n_train=60, n_test=20, train_depths=(2, 3),
                                          n_test_iid=40)) == _fingerprint(iid)
    with pytest.raises(ValueError, match="test_iid_depths"):
        generate_minicode(n_warmup=10, n_train=10, n_test=10, train_depths=(2, 3), n_test_iid=5, test_iid_depths=(1,))
    with pytest.raises(ValueError, match="n_test_iid"):
        generate_minicode(n_test_iid=-1)


def test_task_config_has_both_held_out_splits() -> None:
    from omegaconf import OmegaConf

    from pathlib import Path

    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/task/minicode.yaml"))
    cfg.pop("name")
    cfg.update(n_warmup=50, n_train=40, n_test=10, n_test_iid=10)
    assert 3 in cfg["warmup_depths"] and 0 < cfg["vague_fraction"] < 1  # the v3 world (issue 17)
    splits = load_task("minicode", **cfg)
    assert set(splits) == {"warmup", "train", "test", "test_iid"} and len(splits["test_iid"]) == 10
    assert any(p.meta["vague"] for p in splits["warmup"])


def test_vague_phrases_by_hand() -> None:
    """An underspecified step (issue 17): one phrase for two readings; the code line is the true reading's."""
    from mars2.tasks.minicode import TWINS, VAGUE_PHRASES, _BY_NAME

    assert all(TWINS[TWINS[a]] == a and VAGUE_PHRASES[a] == VAGUE_PHRASES[TWINS[a]] for a in TWINS)
    assert _BY_NAME["sort_desc"].render(None, vague=True) == (
        "sort the numbers in the order the examples show", "xs = sorted(xs, reverse=True)")
    assert _BY_NAME["sub"].render(3, vague=True) == (
        "shift every number by 3 in the direction the examples show", "xs = [x - 3 for x in xs]")
    assert _BY_NAME["max"].render(None, "print", vague=True)[0] == "print the extreme the examples show (0 if the list is empty)"
    assert _BY_NAME["str_lower"].render(None, vague=True)[0] == "convert it to the case the examples show"


def test_vague_problems_are_resolved_by_the_public_examples() -> None:
    from mars2.tasks.minicode import TWINS, VAGUE_PHRASES, alternative_solution

    splits = generate_minicode(seed=2, n_warmup=300, n_train=100, n_test=60, warmup_depths=(1, 2, 3),
                               train_depths=(2, 3), n_test_iid=40, vague_fraction=0.6)
    plain = generate_minicode(seed=2, n_warmup=300, n_train=100, n_test=60, warmup_depths=(1, 2, 3),
                              train_depths=(2, 3), n_test_iid=40)
    assert all(p.meta["vague"] is None for ps in plain.values() for p in ps)  # vague_fraction=0: none
    # split ownership of compositions is unchanged by vagueness (compositions = names of the true readings)
    owner = {p.meta["composition"]: s for s in ("warmup", "train", "test") for p in plain[s]}
    assert all(owner.get(p.meta["composition"], s) == s for s in ("warmup", "train", "test") for p in splits[s])
    n_vague = n_eligible = 0
    for split, probs in splits.items():
        assert verify_problems(probs) == []
        for p in probs:
            eligible = any(n in TWINS for n in p.meta["composition"])
            n_eligible += eligible
            v = p.meta["vague"]
            if v is None:
                assert alternative_solution(p) is None
                continue
            n_vague += 1
            name = p.meta["composition"][v["step"]]
            assert v["reading"] == name and v["twin"] == TWINS[name]
            k = p.meta["constants"][v["step"]]
            assert VAGUE_PHRASES[name].format(k=k, verb="print" if p.mode == "stdin" else "return") in p.statement
            alt = alternative_solution(p)
            assert alt != p.reference_solution and len(alt.split("\n")) == len(p.reference_solution.split("\n"))
            # exactly one line differs: the vague step read the other way
            diff = [(a, b) for a, b in zip(alt.split("\n"), p.reference_solution.split("\n")) if a != b]
            assert len(diff) == 1
            # the public examples tell the readings apart, and so do the hidden tests
            wrong = Problem(id=p.id + "-alt", statement="", mode=p.mode, public_tests=p.public_tests,
                            hidden_tests=(), entry_point=p.entry_point, reference_solution=alt)
            assert verify_problems([wrong]), f"{p.id}: the other reading passes the public examples"
            wrong = Problem(id=p.id + "-alt", statement="", mode=p.mode, public_tests=(),
                            hidden_tests=p.hidden_tests, entry_point=p.entry_point, reference_solution=alt)
            assert verify_problems([wrong]), f"{p.id}: the other reading passes the hidden tests"
    assert 0.45 < n_vague / n_eligible < 0.75
    # test_iid keeps its train problem's statement form
    train = {p.id: p for p in splits["train"]}
    for p in splits["test_iid"]:
        src = train[p.meta["source_train_id"]]
        assert (p.meta["vague"] or {}).get("step") == (src.meta["vague"] or {}).get("step")
    with pytest.raises(ValueError, match="vague_fraction"):
        generate_minicode(n_warmup=10, n_train=10, n_test=10, vague_fraction=1.5)


def test_alternative_solution_by_hand() -> None:
    from mars2.tasks.minicode import alternative_solution

    p = Problem(id="x", statement="", mode="functional", public_tests=(), hidden_tests=(), entry_point="solve",
                meta={"composition": ("add", "sort_asc", "sum"), "family": "list", "constants": [2, None, None],
                      "vague": {"step": 1, "reading": "sort_asc", "twin": "sort_desc"}})
    assert alternative_solution(p) == "def solve(xs):\n    xs = [x + 2 for x in xs]\n    xs = sorted(xs, reverse=True)\n    return sum(xs)"
    p.meta["vague"] = {"step": 0, "reading": "add", "twin": "sub"}
    assert alternative_solution(p).split("\n")[1] == "    xs = [x - 2 for x in xs]"
    p.meta["vague"] = None
    assert alternative_solution(p) is None
