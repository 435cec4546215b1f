"""Registers mars2's config resolvers (``${mars2.team_size:...}``, see `mars2.config.register_resolvers`).

Hydra imports every module of the ``hydra_plugins`` namespace before it composes a config (train.py,
evaluate.py, the compose API of the tests), so the resolvers exist whenever conf/ is resolved."""
from mars2.config import register_resolvers

register_resolvers()
