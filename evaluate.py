"""Evaluate a trained run or a set of policies: `python evaluate.py ckpt=outputs/<run dir>` (see README).

The evaluation search is `eval.search`, spelled as in train.py: `search@eval.search=t_plus`, `eval.search.<key>=...`."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("MARS2_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from mars2.cli.evaluate import run_evaluate

    run_evaluate(cfg)


if __name__ == "__main__":
    main()
