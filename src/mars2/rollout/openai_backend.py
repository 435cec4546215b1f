"""OpenAI-compatible generation backend: any ``/v1/chat/completions`` endpoint (``vllm serve``, SGLang,
hosted APIs), for evaluating served or closed models with ``evaluate.py`` (method.md §1, §7).

Plain standard library (``urllib`` + ``json`` + a thread pool): no client package to install. Requests of
one ``generate`` call go out concurrently (``concurrency`` at a time); each one is retried on transient
failures — connection errors, timeouts, HTTP 408/409/429/5xx, a body that is not the expected JSON — with
exponential backoff (``Retry-After`` honoured, capped), and fails with `OpenAIBackendError` naming the URL,
the attempts and the last error once ``max_retries`` are spent; other 4xx answers (bad model name, bad key)
fail at once. Every attempt has a socket ``timeout_s``, so nothing waits forever.

What comes back: the response text, ``truncated`` (``finish_reason == "length"``) and, when the server
returns them (``logprobs=True``), the sampled tokens' log-probs. Token ids are a server-side matter in this
API: they are filled in only when the server reports tokens as ``token_id:<n>`` (vLLM's
``return_tokens_as_token_ids``, sent when ``token_ids=True``); otherwise ``prompt_ids``/``response_ids`` are
empty and ``meta["tokens"]`` holds the token strings. No weight sync is possible, so this backend serves
evaluation, never training.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence

from mars2.rollout.backend import BackendBase, BackendCapabilities, Generation, GenerationRequest

log = logging.getLogger("mars2")

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIBackendError(RuntimeError):
    """A request to the OpenAI-compatible server failed for good; the message says which and why."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIBackend(BackendBase):
    """`GenerationBackend` over an OpenAI-compatible chat-completions endpoint.

    ``model`` is the served model name used for every policy, ``models`` maps policy ids to names (wins over
    ``model``); with neither, the first model listed by ``GET {base_url}/models`` is used. The API key is read
    from the environment variable ``api_key_env`` (absent → no ``Authorization`` header, as local servers
    want). ``extra_body`` is merged into every request body (server-specific options)."""

    capabilities = BackendCapabilities()

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        models: Mapping[str, str] | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = 0,
        greedy: bool = False,
        logprobs: bool = True,
        token_ids: bool = False,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if concurrency < 1 or max_new_tokens < 1:
            raise ValueError("OpenAIBackend: concurrency and max_new_tokens must be >= 1")
        if max_retries < 0 or timeout_s <= 0:
            raise ValueError("OpenAIBackend: max_retries must be >= 0 and timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.models = dict(models or {})
        self.api_key_env = api_key_env
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seed = seed
        self.greedy = bool(greedy)
        self.logprobs = bool(logprobs)
        self.token_ids = bool(token_ids)
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.extra_body = dict(extra_body or {})
        super().__init__()  # calls (part of each call's sampling seed), tokens_generated
        self.retries = 0  # failed attempts that were retried, over the backend's life

    def close(self) -> None:
        """Nothing to release (one HTTP connection per request); same interface as `VLLMBackend.close`."""

    # -- public ------------------------------------------------------------------------------------------------
    def model_for(self, policy_id: str) -> str:
        """The served model name that answers for ``policy_id``."""
        name = self.models.get(policy_id) or self.model
        if not name:
            name = self.model = self.list_models()[0]
            log.info("openai: no model name configured; using the server's first model %r", name)
        return name

    def list_models(self) -> list[str]:
        data = self._with_retries("GET", f"{self.base_url}/models", None)
        ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not ids:
            raise OpenAIBackendError(f"GET {self.base_url}/models listed no model; set rollout.model")
        return ids

    def generate(self, requests: Sequence[GenerationRequest], greedy: bool | None = None,
                 max_new_tokens: int | None = None) -> list[Generation]:
        greedy = self.greedy if greedy is None else greedy
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        self.calls += 1
        if not requests:
            return []
        bodies = [self._body(r, i, greedy, max_new) for i, r in enumerate(requests)]
        url = f"{self.base_url}/chat/completions"
        workers = min(self.concurrency, len(bodies))
        if workers == 1:
            answers = [self._with_retries("POST", url, b) for b in bodies]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mars2-openai") as pool:
                futures = [pool.submit(self._with_retries, "POST", url, b) for b in bodies]
                try:
                    answers = [f.result() for f in futures]
                except BaseException:
                    for f in futures:  # do not start requests nobody will read
                        f.cancel()
                    raise
        out = []
        for req, answer in zip(requests, answers):
            gen = self._parse(answer, url)
            gen.meta["policy_id"] = req.policy_id
            self.tokens_generated += int(gen.meta.get("completion_tokens") or len(gen.response_ids))
            out.append(gen)
        return out

    # -- request / response ------------------------------------------------------------------------------------
    def _body(self, req: GenerationRequest, index: int, greedy: bool, max_new: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_for(req.policy_id),
            "messages": [{"role": m["role"], "content": m["content"]} for m in req.messages],
            "max_tokens": max_new,
            "temperature": 0.0 if greedy else self.temperature,
            "top_p": 1.0 if greedy else self.top_p,
            "n": 1,
        }
        if self.seed is not None and not greedy:
            # One seed per (backend seed, call, request): reproducible on servers that honour it, and
            # identical prompts in one batch (iid search) still get independent samples.
            body["seed"] = (int(self.seed) * 1_000_003 + self.calls * 7_919 + index
                            + zlib.crc32(req.policy_id.encode())) % (2**31)
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 0
        if self.token_ids:
            body["return_tokens_as_token_ids"] = True
        body.update(self.extra_body)
        return body

    def _parse(self, answer: Any, url: str) -> Generation:
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise OpenAIBackendError(f"POST {url}: answer has no choices[0].message.content: {str(answer)[:300]}") from None
        tokens: list[str] = []
        lps: list[float] = []
        content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
        if content:
            for item in content:
                tokens.append(str(item.get("token", "")))
                lps.append(float(item["logprob"]))
        ids: list[int] = []
        if tokens and all(t.startswith("token_id:") for t in tokens):
            ids = [int(t.split(":", 1)[1]) for t in tokens]
        usage = answer.get("usage") or {}
        return Generation(
            text=text, prompt_ids=[], response_ids=ids, logprobs=lps,
            truncated=choice.get("finish_reason") == "length",
            meta={"tokens": tokens, "logprobs_available": bool(content), "finish_reason": choice.get("finish_reason"),
                  "completion_tokens": usage.get("completion_tokens"), "model": answer.get("model")},
        )

    # -- transport ---------------------------------------------------------------------------------------------
    def _with_retries(self, method: str, url: str, body: Mapping[str, Any] | None) -> Any:
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._request(method, url, body)
            except _Retryable as e:
                last = str(e)
                if attempt == self.max_retries:
                    break
                self.retries += 1
                delay = min(self.backoff_max_s, self.backoff_s * 2**attempt)
                if e.retry_after is not None:
                    delay = min(self.backoff_max_s, max(delay, e.retry_after))
                log.warning("openai: %s %s failed (%s); retry %d/%d in %.2fs", method, url, last, attempt + 1,
                            self.max_retries, delay)
                time.sleep(delay)
        raise OpenAIBackendError(f"{method} {url} failed after {self.max_retries + 1} attempt(s); last error: {last}")

    def _request(self, method: str, url: str, body: Mapping[str, Any] | None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = _body_text(e)
            if e.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code}: {detail}", _retry_after(e.headers)) from None
            raise OpenAIBackendError(f"{method} {url}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, http.client.HTTPException) as e:
            # refused/reset connections, timeouts, a connection closed mid-answer (IncompleteRead, RemoteDisconnected)
            reason = getattr(e, "reason", e)
            raise _Retryable(f"{type(reason).__name__}: {reason}") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable(f"malformed JSON in the answer: {raw[:200]!r}") from None


def _body_text(e: urllib.error.HTTPError) -> str:
    try:
        return e.read()[:300].decode(errors="replace")
    except Exception:  # pragma: no cover - the body is only decoration for the message
        return str(e.reason)


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
