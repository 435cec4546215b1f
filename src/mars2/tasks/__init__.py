"""Programming problems: one schema (``Problem``), the generated minicode benchmark, real loaders."""
from mars2.tasks.problem import Problem, TestCase

__all__ = ["Problem", "TestCase"]
