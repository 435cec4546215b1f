"""The MARS² RL core (method.md §4, §5): reward shaping, tree-level advantages, samples, per-policy buffers,
collation and the GSPO / GRPO objective. Plain Python + torch; no Lightning, Hydra or loggers."""
from mars2.rl.advantages import tree_advantages
from mars2.rl.buffers import PolicyBuffer, PolicyBuffers
from mars2.rl.collate import collate
from mars2.rl.losses import grpo_loss, gspo_loss, k3_kl, tis_weights, token_logprobs
from mars2.rl.objective import LossConfig, compute_old_logprobs, policy_loss
from mars2.rl.samples import Sample, SampleConfig, samples_stats, tree_to_samples
from mars2.rl.shaping import overlong_penalty, shape_rewards

__all__ = [
    "overlong_penalty", "shape_rewards", "tree_advantages", "Sample", "SampleConfig", "tree_to_samples",
    "samples_stats", "PolicyBuffer", "PolicyBuffers", "collate", "token_logprobs", "gspo_loss", "grpo_loss",
    "k3_kl", "tis_weights", "LossConfig", "policy_loss", "compute_old_logprobs",
]
