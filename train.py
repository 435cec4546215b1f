"""Train a MARS2 team: `python train.py paradigm=heterogeneous model=tiny` (see README)."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("MARS2_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
# Jobs started by launchers (submitit) import mars2 and our Hydra plugins from a checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))

from mars2.cli.quiet import quiet_third_party  # noqa: E402

quiet_third_party()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from mars2.cli.train import run_train

    return run_train(cfg)


if __name__ == "__main__":
    main()
