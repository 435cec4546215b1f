"""OpenAI-compatible backend against a FAKE local server (tests only): answers, log-probs, retries, errors.

`FakeOpenAIServer` is a stdlib ``http.server`` on 127.0.0.1 in a thread that implements ``GET /v1/models``
and ``POST /v1/chat/completions``. Each request takes the next scripted action (``ok``, ``500``, ``429``,
``400``, ``malformed``, ``sleep``); ``ok`` answers either scripted text (an echo of the last user message) or
a real sample of a tiny HF model, with token log-probs and ``token_id:<n>`` tokens like ``vllm serve``.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from mars2.agents.base import AgentSpec
from mars2.rollout.backend import GenerationRequest
from mars2.rollout.hf_backend import HFBackend, chat_prompt_ids, sampling_logprobs
from mars2.rollout.openai_backend import OpenAIBackend, OpenAIBackendError
from mars2.resources import SetupError

SYSTEM = {"role": "system", "content": "You write short and direct Python code."}


def _msgs(text: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": text}]


class FakeOpenAIServer:
    """FAKE OpenAI-compatible server. ``script`` is consumed one action per chat request (then ``ok``)."""

    def __init__(self, script=(), hf: HFBackend | None = None, with_logprobs: bool = True, sleep_s: float = 1.5) -> None:
        self.script = list(script)
        self.sleep_s = sleep_s
        self.hf = hf
        self.with_logprobs = with_logprobs
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code: int, payload: bytes, extra: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": [{"id": "served-tiny"}]}).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                    action = server.script.pop(0) if server.script else "ok"
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                if action == "500":
                    return self._send(500, b'{"error": "internal"}')
                if action == "429":
                    return self._send(429, b'{"error": "slow down"}', {"Retry-After": "0.05"})
                if action == "400":
                    return self._send(400, b'{"error": {"message": "unknown model"}}')
                if action == "malformed":
                    return self._send(200, b'{"choices": [ truncated')
                if action == "sleep":
                    time.sleep(server.sleep_s)
                    return self._send(200, b"{}")
                self._send(200, json.dumps(server.answer(body)).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict) -> dict:
        if self.hf is None:
            text = "echo: " + body["messages"][-1]["content"]
            tokens = [{"token": w, "logprob": -0.5 * (k + 1)} for k, w in enumerate(text.split())]
            finish = "stop"
        else:
            g = self.hf.generate([GenerationRequest("p", body["messages"])], max_new_tokens=body["max_tokens"])[0]
            text = g.text
            tokens = [{"token": f"token_id:{t}", "logprob": lp} for t, lp in zip(g.response_ids, g.logprobs)]
            finish = "length" if g.truncated else "stop"
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        if self.with_logprobs and body.get("logprobs"):
            choice["logprobs"] = {"content": tokens}
        return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice],
                "usage": {"completion_tokens": len(tokens)}}

    def __enter__(self) -> "FakeOpenAIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_answers_in_request_order_with_logprobs_and_request_body(monkeypatch) -> None:
    monkeypatch.setenv("MARS2_TEST_KEY", "sk-test")
    prompts = [f"problem {i}" for i in range(7)]
    with FakeOpenAIServer() as srv:
        be = OpenAIBackend(srv.base_url, model="m1", api_key_env="MARS2_TEST_KEY", max_new_tokens=33,
                           temperature=0.7, top_p=0.9, concurrency=3, seed=5)
        gens = be.generate([GenerationRequest("p", _msgs(p)) for p in prompts])
    assert [g.text for g in gens] == [f"echo: problem {i}" for i in range(7)]
    assert gens[0].logprobs == [-0.5, -1.0, -1.5] and gens[0].meta["tokens"] == ["echo:", "problem", "0"]
    assert gens[0].response_ids == [] and gens[0].prompt_ids == [] and not gens[0].truncated
    assert len(srv.bodies) == 7
    b = next(x for x in srv.bodies if x["messages"][-1]["content"] == "problem 0")
    assert b["model"] == "m1" and b["max_tokens"] == 33 and b["temperature"] == 0.7 and b["top_p"] == 0.9
    assert b["logprobs"] is True and b["messages"] == _msgs("problem 0")
    assert all(h.get("Authorization") == "Bearer sk-test" for h in srv.headers)
    # identical policy, one call: every request gets its own sampling seed (iid samples stay independent)
    assert len({x["seed"] for x in srv.bodies}) == 7
    assert be.tokens_generated == 7 * 3


def test_model_name_per_policy_and_from_server_list(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAIServer() as srv:
        be = OpenAIBackend(srv.base_url, models={"a": "model-a"}, max_new_tokens=4)
        be.generate([GenerationRequest("a", _msgs("x")), GenerationRequest("b", _msgs("y"))], greedy=True)
    by_content = {x["messages"][-1]["content"]: x for x in srv.bodies}
    assert by_content["x"]["model"] == "model-a"
    assert by_content["y"]["model"] == "served-tiny"  # first id of GET /v1/models
    assert by_content["x"]["temperature"] == 0.0 and "seed" not in by_content["x"]  # greedy
    assert all("Authorization" not in h for h in srv.headers)


def test_no_logprobs_from_server_gives_empty_list() -> None:
    with FakeOpenAIServer(with_logprobs=False) as srv:
        g = OpenAIBackend(srv.base_url, model="m").generate([GenerationRequest("p", _msgs("hi"))])[0]
    assert g.text == "echo: hi" and g.logprobs == [] and g.meta["logprobs_available"] is False


def test_transient_errors_are_retried_with_backoff() -> None:
    with FakeOpenAIServer(["500", "malformed", "429"]) as srv:
        be = OpenAIBackend(srv.base_url, model="m", max_retries=3, backoff_s=0.01, concurrency=1)
        gens = be.generate([GenerationRequest("p", _msgs("hi"))])
    assert gens[0].text == "echo: hi"
    assert be.retries == 3 and len(srv.bodies) == 4


def test_persistent_500_ends_with_a_clear_error() -> None:
    with FakeOpenAIServer(["500"] * 10) as srv:
        be = OpenAIBackend(srv.base_url, model="m", max_retries=2, backoff_s=0.01)
        with pytest.raises(OpenAIBackendError, match=r"failed after 3 attempt\(s\); last error: HTTP 500"):
            be.generate([GenerationRequest("p", _msgs("hi"))])
    assert len(srv.bodies) == 3


def test_client_error_is_not_retried() -> None:
    with FakeOpenAIServer(["400"]) as srv:
        be = OpenAIBackend(srv.base_url, model="nope", max_retries=3, backoff_s=0.01)
        with pytest.raises(OpenAIBackendError, match="HTTP 400.*unknown model"):
            be.generate([GenerationRequest("p", _msgs("hi"))])
    assert len(srv.bodies) == 1


def test_timeouts_are_bounded_never_a_hang() -> None:
    with FakeOpenAIServer(["sleep", "sleep"], sleep_s=60.0) as srv:
        be = OpenAIBackend(srv.base_url, model="m", timeout_s=0.2, max_retries=1, backoff_s=0.01)
        t0 = time.perf_counter()
        with pytest.raises(OpenAIBackendError, match="2 attempt"):
            be.generate([GenerationRequest("p", _msgs("hi"))])
        # 2 × 0.2 s timeouts + backoff; waiting for the server would take 2 × 60 s (the bound is 100× slack)
        assert time.perf_counter() - t0 < 40.0
        assert len(srv.bodies) == 2


def test_unreachable_server_is_an_error() -> None:
    with FakeOpenAIServer() as srv:
        url = srv.base_url
    # the server is closed now: connection refused
    be = OpenAIBackend(url, model="m", max_retries=1, backoff_s=0.01, timeout_s=1.0)
    with pytest.raises(OpenAIBackendError, match="2 attempt"):
        be.generate([GenerationRequest("p", _msgs("hi"))])


def test_tiny_model_behind_the_server_logprobs_match_teacher_forcing(tmp_path) -> None:
    """The served answer is a real sample of a tiny Qwen3; the log-probs the client returns are the model's
    log-probs of exactly those tokens (recomputed here by teacher forcing)."""
    from mars2.agents.models import PolicySpec, build_policy
    from mars2.agents.tokenizer import build_tiny_tokenizer

    torch.set_num_threads(1)
    corpus = ["Given a list of integers xs: return the sum.", "def solve(xs):\n    return sum(xs)"] * 20
    tok = build_tiny_tokenizer(corpus, vocab_size=400, cache_dir=tmp_path)
    model, _ = build_policy(PolicySpec("p", "qwen3", 64, 2, 2, 1, 32, 128, seed=1, tie_embeddings=False), tok)
    hf = HFBackend({"p": model}, {"p": tok}, max_new_tokens=12, seed=3)
    with FakeOpenAIServer(hf=hf) as srv:
        be = OpenAIBackend(srv.base_url, model="tiny", token_ids=True, max_new_tokens=12)
        msgs = [_msgs("Given a list of integers xs: return the sum."), _msgs("Return the sum.")]
        gens = be.generate([GenerationRequest("p", m) for m in msgs])
    assert srv.bodies[0]["return_tokens_as_token_ids"] is True
    for m, g in zip(msgs, gens):
        assert 0 < len(g.response_ids) == len(g.logprobs) <= 12
        assert g.text == tok.decode(g.response_ids, skip_special_tokens=True)
        assert g.truncated == (len(g.response_ids) == 12 and g.response_ids[-1] != tok.eos_token_id)
        prompt = chat_prompt_ids(tok, m)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + g.response_ids])).logits[0, len(prompt) - 1 : -1]
        ref = sampling_logprobs(logits).gather(-1, torch.tensor(g.response_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(g.logprobs), ref, atol=1e-4)


def test_evaluation_search_runs_through_the_openai_backend() -> None:
    """A whole AB-MCTS evaluation search of two problems, every node generated by the fake server."""
    from fakes import FakeScorer, fake_problem, response

    from mars2.search.factory import SearchConfig
    from mars2.rollout.runner import SearchRunner

    class Server(FakeOpenAIServer):
        def answer(self, body):  # a program the fake scorer grades: public pass, hidden half
            out = super().answer(body)
            out["choices"][0]["message"]["content"] = response([1, 1], [1, 0, 1])
            return out

    agents = [AgentSpec("a0", "You are careful.", "p0"), AgentSpec("a1", "You are fast.", "p1")]
    with Server() as srv:
        be = OpenAIBackend(srv.base_url, model="m", concurrency=4)
        runner = SearchRunner(be, FakeScorer(), agents, SearchConfig(mode="ab_mcts", budget=3))
        trees = runner.run([fake_problem("p0"), fake_problem("p1")], seed=0)
    assert [len(t) for t in trees] == [3, 3]  # Tree length counts real nodes
    assert len(srv.bodies) == 6 and runner.stats["generate_calls"] == 3
    assert all(n.score == 1.0 and n.text.startswith("Here you go") for t in trees for n in t.real_nodes())


def _compose(overrides):
    from test_configs import compose_cfg

    return compose_cfg(overrides)


def test_build_backend_openai_for_evaluation_and_refused_for_training() -> None:
    from mars2.cli.build import build_backend

    c = _compose(["rollout=openai", "rollout.base_url=http://127.0.0.1:9/v1", "rollout.model=served",
                  "rollout.max_retries=5", "rollout.concurrency=2"])
    be = build_backend(c, {}, {}, seed=3, for_training=False)
    assert isinstance(be, OpenAIBackend)
    assert (be.base_url, be.model, be.max_retries, be.concurrency, be.seed) == ("http://127.0.0.1:9/v1", "served", 5, 2, 3)
    assert be.max_new_tokens == c["model"]["generation"]["max_new_tokens"] and be.api_key_env == "OPENAI_API_KEY"
    with pytest.raises(SetupError, match="rollout=openai cannot train"):
        build_backend(c, {}, {}, seed=3)  # train.py's call (for_training defaults to True)
