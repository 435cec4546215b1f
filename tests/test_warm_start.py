"""Supervised warm start: corruptions, real-feedback refinement data, masking, loss, cache, resume."""
from __future__ import annotations

import random

import pytest
import torch

from mars2.agents.models import PolicySpec, build_policy
from mars2.agents.tokenizer import build_tiny_tokenizer
from mars2.tasks.minicode import corpus_texts, generate_minicode
from mars2.training.warm_start import (
    CORRUPTIONS,
    WarmStartConfig,
    _batch,
    _Examples,
    build_refine_pool,
    corrupt_program,
    depth_weights,
    lr_factor,
    select_problems,
    warm_start,
)

PROG = "def solve(xs):\n    xs = [x + 3 for x in xs]\n    xs = sorted(xs)\n    return sum(xs)"
ROLES = ["You write short and direct Python code.", "You are a careful debugger. Check every step against the examples."]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    splits = generate_minicode(seed=0, n_warmup=16, n_train=2, n_test=2, warmup_depths=[1, 2])
    tok = build_tiny_tokenizer(corpus_texts(splits["warmup"]), vocab_size=512,
                               cache_dir=tmp_path_factory.mktemp("tok"))
    return splits["warmup"], tok


@pytest.fixture(scope="module")
def sandbox():
    from mars2.sandbox import Sandbox

    return Sandbox()


def _model(tok):
    return build_policy(PolicySpec("t", "qwen3", 64, 2, 2, 1, 32, 128, seed=0), tok)[0]


def test_corruptions_by_hand() -> None:
    rng = random.Random(0)
    kind, out = corrupt_program(PROG, rng, kind="drop_line")
    assert kind == "drop_line" and len(out.split("\n")) == 3 and out.startswith("def solve(xs):")
    _, out = corrupt_program(PROG, rng, kind="swap_lines")
    assert out == "def solve(xs):\n    xs = sorted(xs)\n    xs = [x + 3 for x in xs]\n    return sum(xs)"
    _, out = corrupt_program(PROG, rng, kind="constant")
    assert out.replace("x + 1 ", "x + 3 ").replace("x + 2 ", "x + 3 ").replace("x + 4 ", "x + 3 ") \
        .replace("x + 5 ", "x + 3 ") == PROG and out != PROG
    _, out = corrupt_program(PROG, rng, kind="operator")
    assert out in (PROG.replace(" + ", " - "), PROG.replace("sum(", "len("))
    _, out = corrupt_program(PROG, rng, donor_lines=["xs = xs[::-1]"], kind="foreign_line")
    assert out in (PROG.replace("xs = [x + 3 for x in xs]", "xs = xs[::-1]"), PROG.replace("xs = sorted(xs)", "xs = xs[::-1]"))
    # edits that cannot apply return None instead of a no-op
    assert corrupt_program("def solve(s):\n    return s", rng, kind="swap_lines") is None
    assert corrupt_program("def solve(s):\n    return s", rng, kind="constant") is None
    # off-by-one moves a constant by exactly 1; a wrong comparison flips strictness / equality
    _, out = corrupt_program(PROG, rng, kind="off_by_one")
    assert out in (PROG.replace("x + 3 ", "x + 2 "), PROG.replace("x + 3 ", "x + 4 "))
    cmp_prog = "def solve(xs):\n    xs = [x for x in xs if x > 2]\n    return len(xs)"
    _, out = corrupt_program(cmp_prog, rng, kind="comparison")
    assert out == cmp_prog.replace(" > ", " >= ")
    assert corrupt_program(PROG, rng, kind="comparison") is None  # no comparison to flip
    # every kind applies to a program with a constant, a comparison and two movable steps; all compile
    full = "def solve(xs):\n    xs = [x + 3 for x in xs if x > 0]\n    xs = sorted(xs)\n    return sum(xs)"
    for k in CORRUPTIONS:
        res = corrupt_program(full, random.Random(1), ["xs = xs[1:]"], kind=k)
        assert res is not None
        compile(res[1], "x", "exec")


def test_batch_masks_prompt_and_padding() -> None:
    ex = _Examples(ids=[[10, 11, 12, 13, 14], [20, 21, 22]], n_prompt=[3, 2])
    ids, mask, tgt = _batch(ex, [0, 1], pad_id=0)
    assert ids.tolist() == [[10, 11, 12, 13, 14], [20, 21, 22, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # position t predicts token t+1; only response tokens (13, 14 / 22) are targets
    assert tgt.tolist() == [[-100, -100, 13, 14, -100], [-100, 22, -100, -100, -100]]


def test_lr_schedule_by_hand() -> None:
    assert lr_factor(0, 10, 2) == pytest.approx(0.5)
    assert lr_factor(1, 10, 2) == pytest.approx(1.0)
    assert lr_factor(2, 10, 2) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert lr_factor(10, 10, 2) == pytest.approx(0.1)


def test_select_problems_by_depth(world) -> None:
    problems, _ = world
    assert {p.difficulty for p in select_problems(problems, [2])} == {2}
    assert len(select_problems(problems, None)) == len(problems)


def test_depth_weights_by_hand(world) -> None:
    problems, _ = world
    d1 = [p for p in problems if p.difficulty == 1][:2]
    d2 = [p for p in problems if p.difficulty == 2][:1]
    ps = d1 + d2
    # [1, 2, 2]: depth 1 gets 1/3 of the mass split over its 2 problems, depth 2 gets 2/3 on its one problem
    assert depth_weights(ps, [1, 2, 2]).tolist() == pytest.approx([1 / 6, 1 / 6, 2 / 3])
    assert depth_weights(ps, None).tolist() == pytest.approx([1 / 3] * 3)


def test_refine_pool_uses_real_public_feedback(world, sandbox) -> None:
    from mars2.sandbox.feedback import format_feedback

    problems, _ = world
    pool = build_refine_pool(problems, 12, seed=0, sandbox=sandbox)
    assert 0 < len(pool) <= 12
    evals = sandbox.evaluate_many([(p, prog) for p, prog, _ in pool])
    for (p, prog, fb), ev in zip(pool, evals):
        assert prog != p.reference_solution
        assert not ev.public.all_passed  # every corrupted program fails a public test
        assert fb == format_feedback(ev.public, "vanilla", 1200)
    assert build_refine_pool(problems, 12, seed=0, sandbox=sandbox) == pool  # seeded
    # both styles: the same programs, each once per style, with the search's formatter and cap
    both = build_refine_pool(problems, 12, seed=0, sandbox=sandbox, feedback_style=["vanilla", "t_plus"],
                             max_feedback_chars=600)
    assert [prog for _, prog, _ in both[::2]] == [prog for _, prog, _ in pool]
    assert [prog for _, prog, _ in both[1::2]] == [prog for _, prog, _ in pool]
    for (p, prog, fb), ev in zip(both[1::2], evals):
        assert fb == format_feedback(ev.public, "t_plus", 600)
        assert fb.startswith("The program is correct for") and " failed.\nInput: " in fb  # T+ detail
    with pytest.raises(ValueError, match="feedback_styles"):
        WarmStartConfig(feedback_styles=["nope"])


def test_warm_start_lowers_loss_caches_and_resumes(world, sandbox, tmp_path) -> None:
    problems, tok = world
    cfg = WarmStartConfig(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, n_refine_pool=16, checkpoint_every=4,
                          harvest_n=8)
    model = _model(tok)
    stats = warm_start(model, tok, problems, cfg, tmp_path, sandbox=sandbox, progress=False, tag="t", role_prompts=ROLES)
    assert not stats["cached"] and len(stats["loss"]) == 12 and stats["n_refine"] > 0
    # the random policy writes no code: all 8 harvested samples are failures with real feedback, one
    # refinement example per feedback style (vanilla and T+)
    assert stats["n_self_refine"] == 16 and stats["harvest"][0]["step"] == 6
    assert stats["harvest"][0]["failures"] == 8 and stats["harvest"][0]["examples"] == 16
    assert sum(stats["loss"][-3:]) / 3 < 0.8 * sum(stats["loss"][:3]) / 3
    assert model.training is False  # mode restored
    assert len(list(tmp_path.glob("*.pt"))) == 1 and not list(tmp_path.glob("*.partial.pt"))

    # Same initial weights + same config → cache hit with identical weights.
    again = _model(tok)
    hit = warm_start(again, tok, problems, cfg, tmp_path, sandbox=sandbox, progress=False, tag="t", role_prompts=ROLES)
    assert hit["cached"] and hit["loss"] == stats["loss"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)

    # A different config is a different cache entry; an interrupted run resumes from its checkpoint and
    # ends with the same weights as an uninterrupted one.
    cfg2 = WarmStartConfig(**{**cfg.__dict__, "steps": 10})
    interrupted = _model(tok)

    def boom(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        warm_start(interrupted, tok, problems, cfg2, tmp_path, sandbox=sandbox, progress=False, role_prompts=ROLES,
                   on_step=boom)
    assert len(list(tmp_path.glob("*.partial.pt"))) == 1
    resumed = _model(tok)
    r = warm_start(resumed, tok, problems, cfg2, tmp_path, sandbox=sandbox, progress=False, role_prompts=ROLES)
    assert r["resumed_from"] == 4 and not r["cached"]
    straight = _model(tok)
    s = warm_start(straight, tok, problems, cfg2, None, sandbox=sandbox, progress=False, role_prompts=ROLES)
    assert s["loss"] == pytest.approx(r["loss"], rel=1e-4)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)


def test_cache_lock_serialises_warm_starts_of_one_policy(tmp_path):
    """Parallel sweep jobs sharing a cache: the second warm start of a policy waits for the first (and then
    loads its cached weights) instead of training the same model twice."""
    import threading
    import time

    from mars2.training.warm_start import _cache_lock

    events = []

    def job(name, hold):
        with _cache_lock(tmp_path, "qwen3_a"):
            events.append(f"{name}+")
            time.sleep(hold)
            events.append(f"{name}-")

    a = threading.Thread(target=job, args=("a", 0.3))
    a.start()
    time.sleep(0.05)
    b = threading.Thread(target=job, args=("b", 0.0))
    b.start()
    with _cache_lock(tmp_path, "llama_a"):  # another policy is not blocked
        events.append("other")
    a.join()
    b.join()
    assert events.index("a-") < events.index("b+")
    assert events.index("other") < events.index("a-")


def _two(tok):
    return {"a": _model(tok), "b": build_policy(PolicySpec("b", "llama", 64, 2, 2, 2, 32, 128, seed=1), tok)[0]}


def test_warm_start_many_sequential_fallback(world, sandbox, tmp_path) -> None:
    """processes=1: each policy warm-started in this process, the same result as warm_start alone."""
    from mars2.training.warm_start import warm_start_many

    problems, tok = world
    cfg = WarmStartConfig(steps=3, batch_size=4, n_refine_pool=8, harvest_at=[], checkpoint_every=0)
    models = _two(tok)
    stats = warm_start_many(models, {"a": tok, "b": tok}, problems, {"a": cfg, "b": cfg}, tmp_path, sandbox=sandbox,
                            progress=False, role_prompts=ROLES, processes=1)
    assert set(stats) == {"a", "b"} and not stats["a"]["cached"] and "parallel_processes" not in stats["a"]
    alone = _model(tok)
    st = warm_start(alone, tok, problems, cfg, None, sandbox=sandbox, progress=False, role_prompts=ROLES)
    assert st["loss"] == pytest.approx(stats["a"]["loss"], rel=1e-5)


@pytest.mark.slow
def test_warm_start_many_trains_in_parallel_processes(world, tmp_path) -> None:
    """The real parallel path: two uncached policies → two spawned workers (one thread each) write the cache,
    then this process loads both; the weights match a warm start run here (up to thread-count rounding)."""
    from mars2.sandbox import Sandbox
    from mars2.training.warm_start import warm_start_many

    problems, tok = world
    cfg = WarmStartConfig(steps=3, batch_size=4, n_refine_pool=8, harvest_at=[], checkpoint_every=0)
    models = _two(tok)
    with Sandbox() as sb:
        stats = warm_start_many(models, {"a": tok, "b": tok}, problems, {"a": cfg, "b": cfg}, tmp_path, sandbox=sb,
                                progress=False, role_prompts=ROLES, processes=2)
        assert stats["a"]["parallel_processes"] == 2 and not stats["a"]["cached"]
        assert len(list(tmp_path.glob("*.pt"))) == 2
        ref = _two(tok)
        for pid in ("a", "b"):
            warm_start(ref[pid], tok, problems, cfg, None, sandbox=sb, progress=False, role_prompts=ROLES)
            for x, y in zip(models[pid].state_dict().values(), ref[pid].state_dict().values()):
                assert torch.allclose(x, y, atol=1e-4)
        # everything cached now: no worker is started, both load from the cache
        again = warm_start_many(_two(tok), {"a": tok, "b": tok}, problems, {"a": cfg, "b": cfg}, tmp_path, sandbox=sb,
                                progress=False, role_prompts=ROLES, processes=2)
        assert again["a"]["cached"] and again["b"]["cached"]


def test_refine_pool_teaches_the_other_reading_of_a_vague_step(sandbox) -> None:
    """twin_share (issue 17): for a problem with an underspecified step, the buggy program is the other reading
    of that step (minicode.alternative_solution), with its real public-test feedback; twin_share=0: never."""
    from mars2.sandbox.feedback import format_feedback
    from mars2.tasks.minicode import alternative_solution

    splits = generate_minicode(seed=1, n_warmup=40, n_train=2, n_test=2, warmup_depths=[2], vague_fraction=1.0)
    vague = [p for p in splits["warmup"] if p.meta["vague"]]
    assert len(vague) >= 10
    pool = build_refine_pool(vague[:10], 10, seed=0, sandbox=sandbox, twin_share=1.0)
    assert len(pool) == 10
    evals = sandbox.evaluate_many([(p, prog) for p, prog, _ in pool])
    for (p, prog, fb), ev in zip(pool, evals):
        assert prog == alternative_solution(p)
        assert not ev.public.all_passed and fb == format_feedback(ev.public, "vanilla", 1200)
    # without twin_share only a corruption that happens to flip the reading (" + " -> " - ", reverse=True ->
    # reverse=False, ...) gives the other reading
    plain = build_refine_pool(vague[:10], 10, seed=0, sandbox=sandbox)
    assert sum(prog == alternative_solution(p) for p, prog, _ in plain) < len(plain) // 2
    assert WarmStartConfig().twin_share == 0.5


# Computed with the pre-split code (one module warm_start.py, tokenizer with hard-coded role prompts, commit
# af095f8) by the script of issue 20.4's identity check: the default roles' tokenizer cache key (corpus_hash)
# and fingerprint, and the warm-start cache key of a seed-0 tiny policy with the default WarmStartConfig.
# They depend on the torch init, the `tokenizers` serialisation and the transformers version (the model
# config records it): recompute only on an upgrade of those.
PINNED_BEFORE_SPLIT = {"corpus_hash": "face9f4c6dc916e1", "fingerprint": "ceaedc593baf33e1",
                       "cache_key": "449cde153fcbf7f022e6"}


def test_split_keeps_cache_keys_and_public_names() -> None:
    """Issue 20.4: warm start split into config / corruptions / data / loop; the package re-exports every
    name, and with the configured default roles the tokenizer and the warm-start cache key are unchanged
    (so existing caches stay valid). The full check (torch.equal weights of a 6-step warm start with a
    harvest, on 60 problems with the real sandbox) is in the issue's note."""
    from pathlib import Path

    import yaml

    import mars2.training.warm_start as ws
    from mars2.agents.tokenizer import corpus_hash, tokenizer_fingerprint
    from mars2.training.warm_start import config, corruptions, data, loop

    owners = {config: ["WARM_START_VERSION", "WarmStartConfig"],
              corruptions: ["CORRUPTIONS", "corrupt_program", "build_refine_pool", "harvest_failures", "_donor_lines"],
              data: ["select_problems", "depth_weights", "fresh_examples", "repair_examples", "batch_indices",
                     "response_loss_sum", "_Examples", "_encode", "_batch", "_accumulate"],
              loop: ["lr_factor", "cache_key", "warm_start", "warm_start_many", "_cache_lock", "_cached", "_params_digest"]}
    for mod, names in owners.items():
        for n in names:
            assert getattr(ws, n) is getattr(mod, n), n
    assert set(ws.__all__) <= set(dir(ws)) and ws.WARM_START_VERSION == 3

    roles = [r["prompt"] for r in yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "conf" / "roles" / "default.yaml").read_text())["roles"]]
    splits = generate_minicode(seed=0, n_warmup=16, n_train=2, n_test=2, warmup_depths=[1, 2])
    corpus = corpus_texts(splits["warmup"])
    tok = build_tiny_tokenizer(corpus, vocab_size=512, role_prompts=roles)
    model = _model(tok)
    got = {"corpus_hash": corpus_hash(corpus, 512, roles), "fingerprint": tokenizer_fingerprint(tok),
           "cache_key": ws.cache_key(model, tok, select_problems(splits["warmup"], None), WarmStartConfig(), roles)}
    assert got == PINNED_BEFORE_SPLIT
