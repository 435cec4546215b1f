"""Layer rules of design.md as a test: the import graph of the package, read from the source (ast), obeys them.

- the algorithm core (tasks, sandbox, search, rl, metrics) imports no framework (Lightning, Hydra, OmegaConf,
  wandb, mlflow, optuna) and not ``mars2.resources`` (the GPU preflight);
- ``search`` gets a generate function and a scorer, never a model or a sandbox: it imports no agents,
  rollout, training, sandbox executor or torch;
- the core never imports the layers above it (agents, rollout, training, tracking, cli, evaluation);
- agents (specs, prompts, policies) do not import rollout, training, tracking or cli.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mars2"
FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb", "mlflow", "optuna")
CORE = ("tasks", "sandbox", "search", "rl", "metrics")
UPPER = ("agents", "rollout", "training", "tracking", "cli", "evaluation", "resources", "sweeps", "trees",
         "reward_model")


def imports(path: Path) -> set[str]:
    """Every module name a file imports (absolute; relative imports resolved against the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
    return out


def files_of(layer: str) -> list[Path]:
    p = SRC / layer
    return sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")]


def offenders(layers: tuple[str, ...], banned: tuple[str, ...]) -> list[str]:
    bad = []
    for layer in layers:
        for f in files_of(layer):
            for m in sorted(imports(f)):
                if any(m == b or m.startswith(b + ".") for b in banned):
                    bad.append(f"{f.relative_to(SRC)} imports {m}")
    return bad


def test_import_reader_sees_relative_and_nested_imports(tmp_path):
    f = SRC / "search" / "_layer_probe_tmp.py"
    f.write_text("def g():\n    from ..agents import base\n    import wandb\n")
    try:
        assert {"mars2.agents", "wandb"} <= imports(f)
    finally:
        f.unlink()


@pytest.mark.parametrize("layer", CORE)
def test_core_imports_no_framework(layer):
    assert offenders((layer,), FRAMEWORKS + ("mars2.resources",)) == []


@pytest.mark.parametrize("layer", CORE)
def test_core_imports_no_upper_layer(layer):
    assert offenders((layer,), tuple(f"mars2.{u}" for u in UPPER)) == []


def test_search_sees_no_model_and_no_sandbox():
    assert offenders(("search",), ("torch", "transformers", "mars2.sandbox.executor", "mars2.sandbox.harness")) == []


def test_agents_do_not_import_rollout_or_frameworks():
    assert offenders(("agents",), ("mars2.rollout", "mars2.training", "mars2.tracking", "mars2.cli") + FRAMEWORKS) == []


def test_rollout_backends_live_in_rollout():
    assert not list((SRC / "agents").glob("*_backend.py"))
    assert (SRC / "rollout" / "runner.py").is_file() and not (SRC / "search" / "runner.py").exists()


def test_evaluation_gets_probes_through_the_task_registry():
    """Probes are a problem-level hook (tasks.registry.PROBES by ``Problem.source``), not a minicode import."""
    from mars2.tasks.minicode import generate_minicode
    from mars2.tasks.problem import Problem, TestCase
    from mars2.tasks.registry import probe_tests

    assert not [m for m in imports(SRC / "evaluation.py") if m.startswith("mars2.tasks.minicode")]
    p = generate_minicode(seed=0, n_warmup=5, n_train=2, n_test=2, n_test_iid=0)["test"][0]
    probes = probe_tests(p, 4, seed=0)
    assert len(probes) == 4 and all(t.input not in [x.input for x in p.all_tests] for t in probes)
    other = Problem(id="x", statement="s", mode="stdin", public_tests=(TestCase("1", "1"),), hidden_tests=(),
                    source="livecodebench")
    assert probe_tests(other, 4) == []
