"""Silence third-party messages that say nothing about a mars2 run (entry points call this once).

- Lightning's "Found N module(s) in eval mode": our policies are deliberately kept in eval mode (no dropout
  during the rollout and the loss, method.md §5), so the warning is expected on every run.
- Lightning's LitLogger tip and the pytree deprecation notice from Lightning's own code.
- Hydra/Lightning's CSV "directory exists" notice when a run dir is reused on resume.
Real warnings (from mars2, torch numerics, transformers configs) stay visible."""
from __future__ import annotations

import logging
import warnings


def quiet_third_party() -> None:
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")

    class _DropTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            msg = record.getMessage()
            return "litlogger" not in msg.lower() and "💡 Tip" not in msg

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
