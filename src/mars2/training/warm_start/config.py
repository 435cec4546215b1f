"""The warm start's knobs and recipe version (`mars2.training.warm_start`; kept apart so that the config
schema, `mars2.schema`, reads them without the training code)."""
from __future__ import annotations

from dataclasses import dataclass, field


# Bump when the data recipe or the loss changes so that stale cached weights are not reused.
WARM_START_VERSION = 3  # 3: twin readings of vague steps as repair examples; 2: both feedback styles, ...


@dataclass
class WarmStartConfig:
    """Warm-start knobs (design.md "The miniature world"; defaults = the calibrated tiny preset).

    ``depths``: which warm-up problems to use, by difficulty (None = all); repeats weight a depth
    (``[1, 2, 2, 3]``: a quarter of the fresh examples at depth 1, half at 2, a quarter at 3). ``refine_fraction``: share of
    refinement examples in every batch. ``n_refine_pool``: how many distinct corrupted programs are built
    and run in the sandbox (each is reused across steps). ``max_len``: examples longer than this many tokens
    are dropped. ``harvest_at``: fractions of ``steps`` at which the policy itself samples ``harvest_n``
    fresh solutions (T=1) to warm-up problems; those failing a public test become refinement examples with
    their real feedback, and from then on ``harvest_share`` of the refinement examples of a batch are such
    self-made failures (the errors a policy actually makes differ from synthetic edits).
    ``feedback_styles``: the feedback formats of the refinement examples (``mars2.sandbox.feedback.STYLES``),
    one example per style for every buggy program; ``max_feedback_chars``: their length cap (the search's
    ``feedback_max_chars`` default, so warm-start and search prompts match). ``twin_share``: for a problem
    with an underspecified step (minicode ``meta["vague"]``), the probability that its buggy program is the
    other reading of that step (``mars2.tasks.minicode.alternative_solution``: e.g. ascending where the
    examples show descending), so that the warm start teaches the repair "the feedback says reading A
    fails: use reading B", which a fresh sample cannot make."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    refine_fraction: float = 0.3
    max_len: int = 384
    seed: int = 0
    data_seed: int = 0
    depths: list[int] | None = None
    enabled: bool = True
    n_refine_pool: int = 768
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    micro_batch_size: int = 8
    harvest_at: list[float] = field(default_factory=lambda: [0.5])
    harvest_n: int = 256
    harvest_share: float = 0.5
    feedback_styles: list[str] = field(default_factory=lambda: ["vanilla", "t_plus"])
    max_feedback_chars: int = 600
    twin_share: float = 0.5

    def __post_init__(self) -> None:
        from mars2.sandbox.feedback import STYLES

        styles = [self.feedback_styles] if isinstance(self.feedback_styles, str) else list(self.feedback_styles)
        bad = [s for s in styles if s not in STYLES]
        if not styles or bad:
            raise ValueError(f"warm_start.feedback_styles must be a non-empty list of {STYLES}, got {self.feedback_styles!r}")
        self.feedback_styles = styles
        if self.max_feedback_chars < 1:
            raise ValueError(f"warm_start.max_feedback_chars must be >= 1, got {self.max_feedback_chars}")

