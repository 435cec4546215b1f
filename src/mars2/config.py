"""Config entry points shared by the CLI and Hydra: the error type, the start-up validation and the OmegaConf
resolvers. The schema itself (one strict dataclass per config group) is `mars2.schema`; this module stays
light because Hydra imports it (``hydra_plugins.mars2_resolvers``) before it composes any config."""
from __future__ import annotations

from typing import Any, Mapping


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def validate_config(cfg: Mapping[str, Any], kind: str = "train") -> Any:
    """Check the resolved config dict of train.py (``kind="train"``) or evaluate.py (``"evaluate"``) against
    the schema, before anything is loaded or built; ConfigError naming the key at the first problem. Returns
    the typed config (`mars2.schema.TrainConfig` / `EvaluateConfig`)."""
    from mars2.schema import parse_config

    return parse_config(cfg, kind)


def team_size(roster: Any, size: Any = None) -> int:
    """Default size of a heterogeneous team (``paradigm.n_agents`` of conf/paradigm/heterogeneous.yaml):
    the model's ``team_size`` when it sets one (tiny: 2 of its 3 policies), else its whole roster (14b: 3)."""
    if size is not None:
        return int(size)
    return len(list(roster))


def register_resolvers() -> None:
    """OmegaConf resolvers the config tree uses (``${mars2.team_size:...}``). Called by `mars2.cli` and by
    the ``hydra_plugins.mars2_resolvers`` module, which Hydra imports before it composes any config."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("mars2.team_size", team_size, replace=True)
