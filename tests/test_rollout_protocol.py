"""The generation protocol's explicit capabilities (mars2.rollout.backend): what the trainer does around a
backend is read from them, never from its class name."""
from __future__ import annotations

from mars2.rollout.backend import BackendBase, BackendCapabilities


def test_each_backend_states_where_its_weights_live():
    from mars2.rollout.hf_backend import HFBackend
    from mars2.rollout.openai_backend import OpenAIBackend
    from mars2.rollout.vllm_backend import VLLMBackend

    assert HFBackend.capabilities == BackendCapabilities(shares_trainer_modules=True, holds_own_weights=False)
    assert VLLMBackend.capabilities == BackendCapabilities(shares_trainer_modules=False, holds_own_weights=True)
    assert OpenAIBackend.capabilities == BackendCapabilities()
    assert all(issubclass(c, BackendBase) for c in (HFBackend, VLLMBackend, OpenAIBackend))


def test_base_state_round_trip_and_no_op_hooks():
    a = BackendBase()
    a.calls, a.tokens_generated = 7, 123
    b = BackendBase()
    b.load_state_dict(a.state_dict())
    assert (b.calls, b.tokens_generated) == (7, 123)
    assert b.on_policy_updated("p", None) is None and b.close() is None


def test_full_params_gathers_only_for_a_backend_sharing_the_trainers_modules(monkeypatch):
    """Under FSDP the callback enters the full-parameter gather for HF-like backends only."""
    import contextlib

    from mars2.training import rollout as cb

    from lightning.pytorch.strategies import FSDPStrategy as LightningFSDP

    class FSDPStrategy(LightningFSDP):  # the callback tests isinstance on Lightning's own class
        def __init__(self) -> None:
            pass

    entered = []

    class Trainer:
        strategy = FSDPStrategy()
        model = object()

    import torch.distributed.fsdp as fsdp

    monkeypatch.setattr(fsdp.FullyShardedDataParallel, "summon_full_params",
                        staticmethod(lambda *a, **k: entered.append(k) or contextlib.nullcontext()))
    for caps, want in ((BackendCapabilities(shares_trainer_modules=True), 1),
                       (BackendCapabilities(holds_own_weights=True), 0), (BackendCapabilities(), 0)):
        entered.clear()
        self = type("R", (), {})()
        self._trainer = Trainer()
        self.backend = type("B", (BackendBase,), {"capabilities": caps})()
        cb.TreeSearchRollout.full_params(self)
        assert len(entered) == want, caps
