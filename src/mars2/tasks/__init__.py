"""Programming problems: one schema (``Problem``), the generated minicode benchmark, real loaders."""
from mars2.tasks.loaders import TaskDataError
from mars2.tasks.minicode import corpus_texts, generate_minicode, verify_problems
from mars2.tasks.problem import Problem, TestCase
from mars2.tasks.registry import load_task

__all__ = [
    "Problem",
    "TestCase",
    "TaskDataError",
    "generate_minicode",
    "verify_problems",
    "corpus_texts",
    "load_task",
]
