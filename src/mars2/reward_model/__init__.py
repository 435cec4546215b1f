"""The T+ reward model R_θ(problem, program) → [0, 1] (method.md §6.3): data from tree nodes labelled by
hidden tests, a tiny hashed-n-gram classifier (miniature) or a value head on a causal LM (real scale),
BCE training, held-out AUC. Plain torch."""
from mars2.reward_model.data import RMExample, examples_from_trees, split_by_problem
from mars2.reward_model.online import RoundwiseRM, load_run_reward_model, run_reward_model_path, selection_values
from mars2.reward_model.model import HashedNgramRM, RewardModel, ValueHeadRM, code_tokens, rm_text
from mars2.reward_model.trainer import (
    RMTrainConfig,
    evaluate_reward_model,
    load_reward_model,
    roc_auc,
    save_reward_model,
    train_reward_model,
)

__all__ = [
    "RMExample", "examples_from_trees", "split_by_problem", "HashedNgramRM", "ValueHeadRM", "RewardModel",
    "code_tokens", "rm_text", "RMTrainConfig", "train_reward_model", "evaluate_reward_model", "roc_auc",
    "save_reward_model", "load_reward_model", "RoundwiseRM", "load_run_reward_model", "run_reward_model_path",
    "selection_values",
]
