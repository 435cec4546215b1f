"""Silence third-party messages that say nothing about a mars2 run (entry points call this once).

- Lightning's "Found N module(s) in eval mode": our policies are deliberately kept in eval mode (no dropout
  during the rollout and the loss, method.md §5), so the warning is expected on every run.
- Lightning's LitLogger tip and the pytree deprecation notice from Lightning's own code.
- Hydra/Lightning's CSV "directory exists" notice when a run dir is reused on resume.
- Lightning's own console handler: ``import lightning`` adds a ``StreamHandler`` ("INFO: ...") to the
  ``lightning`` logger, so under Hydra (whose root handlers also print it) every Lightning INFO line appeared
  twice. :func:`drop_lightning_console` removes that handler once the root logger has handlers.
- transformers' tqdm bars ("Loading weights", "Writing model shards") when stderr is not a terminal: in a
  piped log or a SLURM ``.out`` file they are a wall of carriage returns.
- matplotlib's INFO line about (re)building its font cache.
Real warnings (from mars2, torch numerics, transformers configs) stay visible.

:class:`TerminalRoundFilter` (used by ``conf/hydra/job_logging/mars2.yaml``) keeps the per-round lines of
:mod:`mars2.tracking.progress` out of the console when stdout is a terminal (the rich bars are there);
``train.log`` always has them."""
from __future__ import annotations

import logging
import os
import sys
import warnings

ROUND_LOGGER = "mars2.rounds"


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except Exception:  # closed or replaced streams
        return False


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
    logging.getLogger("matplotlib.font_manager").setLevel(logging.WARNING)
    quiet_progress_bars()
    drop_lightning_console()


def quiet_progress_bars() -> None:
    """No transformers / huggingface_hub tqdm bars when stderr is not a terminal. huggingface_hub reads
    ``HF_HUB_DISABLE_PROGRESS_BARS`` when it is imported; an already imported transformers is told directly."""
    if _isatty(sys.stderr):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:  # an odd transformers build: bars are cosmetic
            pass
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except Exception:
            pass


def drop_lightning_console() -> int:
    """Remove the console handler ``import lightning`` puts on the ``lightning`` logger, when the root logger
    already prints (Hydra's job logging): its records then reach the console and ``train.log`` once, through
    the root. Returns the number of handlers removed (0 before lightning is imported, or without root
    handlers, where Lightning's handler is the only console output)."""
    if "lightning" not in sys.modules or not logging.getLogger().handlers:
        return 0
    lg = logging.getLogger("lightning")
    drop = [h for h in lg.handlers if type(h) is logging.StreamHandler]
    for h in drop:
        lg.removeHandler(h)
    lg.propagate = True
    return len(drop)


class TerminalRoundFilter(logging.Filter):
    """Console-handler filter: drop the per-round lines (logger ``mars2.rounds``) when stdout is a terminal,
    where the rich progress bars show the run; keep them when stdout is a pipe or a file (SLURM)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ROUND_LOGGER or record.name.startswith(ROUND_LOGGER + "."):
            return not _isatty(sys.stdout)
        return True
