"""Metrics of searches and evaluations (method.md §7): pass rates, TTS curves, diversity, confidence
intervals, search statistics. Plain Python/numpy."""
from mars2.metrics.diversity import (
    Candidate,
    behaviour_vector,
    diversity_summary,
    diversity_values,
    ec_at_k,
    normalised_ast,
    semantic_distance,
    structural_diversity,
)
from mars2.metrics.passk import (
    avg_pass1,
    avg_pass1_values,
    pass1_mcts,
    pass1_mcts_values,
    pass_at_1,
    pass_at_n,
    pass_at_n_values,
    tts_curve,
)
from mars2.metrics.search_stats import search_stats
from mars2.metrics.stats import (
    bootstrap_means,
    mean_ci,
    paired_bootstrap_ci,
    paired_differences,
    paired_summary,
    paired_t_ci,
    t_quantile_two_sided,
)

__all__ = [
    "Candidate",
    "avg_pass1",
    "behaviour_vector",
    "diversity_summary",
    "diversity_values",
    "ec_at_k",
    "normalised_ast",
    "semantic_distance",
    "structural_diversity",
    "avg_pass1_values",
    "bootstrap_means",
    "paired_bootstrap_ci",
    "paired_differences",
    "paired_summary",
    "paired_t_ci",
    "mean_ci",
    "pass1_mcts",
    "pass1_mcts_values",
    "pass_at_1",
    "pass_at_n",
    "pass_at_n_values",
    "search_stats",
    "t_quantile_two_sided",
    "tts_curve",
]
