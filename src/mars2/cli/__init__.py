"""Command-line entry points (train.py, evaluate.py, study.py). Registers the config resolvers."""
from mars2.config import register_resolvers

register_resolvers()
