"""Code-execution sandbox (method.md §2): run untrusted programs on tests, compare in the parent, and turn
verdicts into refinement feedback (§2 vanilla, §6.1 T+). See :mod:`mars2.sandbox.executor`."""
from mars2.sandbox.executor import Sandbox, SandboxConfig, SandboxError
from mars2.sandbox.feedback import format_feedback
from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict

__all__ = ["Sandbox", "SandboxConfig", "SandboxError", "format_feedback", "Evaluation", "ExecResult", "TestVerdict"]
