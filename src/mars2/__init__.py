"""mars2: multi-agent RL with tree search for code generation (MARTI-MARS2)."""
__version__ = "0.1.0"
