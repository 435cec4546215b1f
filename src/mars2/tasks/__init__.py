"""Programming problems: one schema (``Problem``), the generated minicode benchmark, real loaders, and
``python -m mars2.cli.stats task=<name>`` (counts per split / difficulty / mode)."""
from mars2.tasks.loaders import LCB_PRELUDE, EmptySplitError, LoadReport, TaskDataError
from mars2.tasks.minicode import corpus_texts, generate_minicode, verify_problems
from mars2.tasks.problem import Problem, TestCase
from mars2.tasks.registry import load_task

__all__ = [
    "Problem",
    "TestCase",
    "TaskDataError",
    "EmptySplitError",
    "LCB_PRELUDE",
    "LoadReport",
    "generate_minicode",
    "verify_problems",
    "corpus_texts",
    "load_task",
]
