"""Command-line behaviour for Hydra / SLURM users (issue 19): misspelt group options fail like `model=15b`;
one INFO line per round in train.log and piped stdout; third-party log noise (Lightning's doubled lines,
transformers' bars, wandb's anonymous warning)."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict:
    e = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
         "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    e.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    e.update(extra)
    return e


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


# -- 19.1: misspelt options of the experiment / debug groups -------------------------------------------------------
@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
@pytest.mark.parametrize("override,group,valid", [("debug=fst", "debug", "fast"), ("experiment=grpoo", "experiment", "grpo"),
                                                  ("model=15b", "model", "tiny")])
def test_misspelt_group_option_fails_with_the_valid_options(tmp_path, script, override, group, valid):
    p = run([str(ROOT / script), override, "--cfg", "job"], tmp_path)
    assert p.returncode != 0
    err = p.stderr
    assert f"Could not find '{group}/{override.split('=')[1]}'" in err
    assert f"Available options in '{group}'" in err and f"\t{valid}\n" in err


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_groups_absent_by_default_and_selectable(tmp_path, script):
    import yaml

    p = run([str(ROOT / script), "--cfg", "job"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    default = yaml.safe_load(p.stdout)
    p = run([str(ROOT / script), "debug=fast", "experiment=grpo", "--cfg", "job"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    chosen = yaml.safe_load(p.stdout)
    # debug=fast applied (tiny eval), experiment=grpo applied (single-policy paradigm); defaults untouched
    assert chosen["eval"]["n_problems"] == 4 and default["eval"]["n_problems"] != 4
    assert (chosen["paradigm"]["name"], chosen["search"]["mode"]) == ("single", "iid")
    assert (default["paradigm"]["name"], default["search"]["mode"]) == ("heterogeneous", "ab_mcts")
    if script == "train.py":
        assert default["overwrite"] is False and default["rounds"] == 10 and chosen["rounds"] == 2


# -- 19.2: one line per round ------------------------------------------------------------------------------------
ROUND = {"time/round_s": 41.24, "round": 3.0, "rl/policy/qwen3_a/reward_mean": 0.25, "policy/qwen3_a/loss": -0.0123,
         "policy/qwen3_a/kl": 0.00214, "policy/qwen3_a/clip_frac": 0.0, "policy/qwen3_a/taken": 8.0,
         "rl/policy/llama_a/reward_mean": 0.5, "policy/llama_a/taken": 0.0}
EVAL = {"eval/pass1": 0.125, "eval/pass1_mcts": 0.25, "eval/pass_at_n": 0.375, "round": 3.0}


def test_round_line_by_hand():
    from mars2.tracking.progress import round_line

    assert round_line(3, 20, ROUND, EVAL) == (
        "round 3/20 | qwen3_a: reward 0.250 loss -0.012 kl 0.0021 clip 0.00 trained 8 | "
        "llama_a: reward 0.500 no update trained 0 | 41.2 s/round | eval pass@1 0.125 pass@1(search) 0.250 pass@N 0.375")
    assert round_line(0, 20, None, EVAL).startswith("round 0/20 (before training) | eval pass@1 0.125")


def test_round_logger_waits_for_the_evaluation_only_on_evaluated_rounds(caplog):
    from mars2.tracking.progress import RoundLogLogger

    lg = RoundLogLogger(rounds=4, eval_every=2)
    with caplog.at_level(logging.INFO, logger="mars2.rounds"):
        lg.log_metrics(EVAL, step=0)                 # the evaluation before training
        lg.log_metrics({**ROUND, "round": 1.0}, step=1)  # not evaluated: written at once
        assert len(lg.lines) == 2 and lg.lines[1].startswith("round 1/4 |") and "eval" not in lg.lines[1]
        lg.log_metrics({**ROUND, "round": 2.0}, step=2)  # evaluated: waits for its evaluation
        assert len(lg.lines) == 2
        lg.log_metrics({**EVAL, "round": 2.0}, step=2)
        lg.log_metrics({**ROUND, "round": 3.0}, step=3)
        lg.log_metrics({**ROUND, "round": 4.0}, step=4)  # the last round is evaluated too
        lg.finalize("failed")                          # e.g. killed during that evaluation: still written
    assert [ln.split(" |")[0] for ln in lg.lines] == ["round 0/4 (before training)", "round 1/4", "round 2/4",
                                                      "round 3/4", "round 4/4"]
    assert "eval pass@1 0.125" in lg.lines[2] and "s/round" in lg.lines[2]
    assert [r.getMessage() for r in caplog.records if r.name == "mars2.rounds"] == lg.lines


def test_round_lines_stay_off_a_terminal_console(monkeypatch):
    from mars2.cli import quiet

    f = quiet.TerminalRoundFilter()
    rec = logging.LogRecord("mars2.rounds", logging.INFO, __file__, 1, "round 1/2", None, None)
    other = logging.LogRecord("mars2", logging.INFO, __file__, 1, "problems", None, None)
    monkeypatch.setattr(quiet, "_isatty", lambda s: True)
    assert not f.filter(rec) and f.filter(other)
    monkeypatch.setattr(quiet, "_isatty", lambda s: False)
    assert f.filter(rec) and f.filter(other)


def test_lightning_console_handler_dropped_under_root_handlers():
    code = (
        "import logging, sys; sys.path.insert(0, 'src')\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='ROOT %(message)s')\n"
        "import lightning.pytorch\n"
        "from mars2.cli.quiet import drop_lightning_console\n"
        "assert drop_lightning_console() == 1\n"
        "logging.getLogger('lightning.pytorch.utilities.rank_zero').info('GPU available: False')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env())
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("GPU available") == 1 and "INFO: GPU available" not in p.stderr


def test_wandb_logger_does_not_pass_the_anonymous_setting(tmp_path):
    from mars2.tracking.loggers import Mars2WandbLogger

    lg = Mars2WandbLogger(project="p", name="n", save_dir=str(tmp_path), offline=True)
    assert "anonymous" not in lg._wandb_init


@pytest.mark.slow
def test_debug_fast_run_piped_has_a_line_per_round(tmp_path):
    """The SLURM view: stdout is a file. Every round (and the evaluation before training) has its INFO line in
    stdout and in train.log; Lightning's lines appear once; no transformers progress bars."""
    out_dir = tmp_path / "run"
    with open(tmp_path / "stdout.txt", "w") as so, open(tmp_path / "stderr.txt", "w") as se:
        p = subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=fast", "rounds=3", f"hydra.run.dir={out_dir}"],
                           cwd=tmp_path, env=env(), stdout=so, stderr=se, timeout=3000)
    stdout, stderr = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    assert p.returncode == 0, stderr[-3000:]
    log_file = (out_dir / "train.log").read_text()
    for text in (stdout, log_file):
        lines = [ln for ln in text.splitlines() if "[mars2.rounds][INFO]" in ln]
        assert [ln.split(" - ", 1)[1].split(" |")[0] for ln in lines] == [
            "round 0/3 (before training)", "round 1/3", "round 2/3", "round 3/3"]
        assert all("s/round" in ln and "eval pass@1" in ln for ln in lines[1:])
    both = stdout + stderr
    assert both.count("GPU available") == 1 and "INFO: GPU available" not in both
    assert "Writing model shards" not in both and "Loading weights" not in both


def test_no_transformers_bars_when_stderr_is_not_a_terminal():
    """Every entry point goes through Hydra's plugin scan (hydra_plugins.mars2_optuna_sweeper) before its task
    imports transformers: with stderr piped, transformers' tqdm bars are off; an explicit setting wins."""
    code = ("import hydra_plugins.mars2_optuna_sweeper\n"
            "from transformers.utils import logging as l\n"
            "print(l.is_progress_bar_enabled())\n")
    e = env()
    e.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=e)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr[-2000:]
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**e, "HF_HUB_DISABLE_PROGRESS_BARS": "0"})
    assert p.returncode == 0 and p.stdout.strip() == "True", p.stderr[-2000:]


def test_round_metrics_in_the_rich_rounds_bar():
    """In a terminal the rich bars carry the round's key metrics: per-policy reward and loss, Pass@1."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from mars2.tracking.progress import RoundLogLogger, bar_summary

    assert bar_summary({**ROUND, **EVAL}) == "reward 0.25/0.50 · loss -0.012 · pass@1 0.125"
    progress = Progress(console=Console(file=io.StringIO()))
    task = progress.add_task("rounds", total=4)
    other = progress.add_task("round 1 rollout", total=8)
    lg = RoundLogLogger(rounds=4, eval_every=1).attach(progress)
    lg.log_metrics({**ROUND, "round": 1.0}, step=1)
    assert progress.tasks[task].description == "rounds"  # waits for the evaluation of round 1
    lg.log_metrics({**EVAL, "round": 1.0}, step=1)
    assert progress.tasks[task].description == "rounds reward 0.25/0.50 · loss -0.012 · pass@1 0.125"
    assert progress.tasks[other].description == "round 1 rollout"
