"""`make bench` keeps working: its quick mode runs training against a bare peft loop, scoring against the code
of an older commit and the math demo's generation against the code before issue 28, on a few rows, so a change of
the models or the study's fields cannot break it silently. It runs on the tests' tiny model; the numbers of a quick
run mean nothing and are not checked."""

import subprocess
import sys

import pytest

from conftest import ROOT

BENCH = ROOT / "tests" / "benchmarks" / "bench_train_eval.py"


def test_the_bench_runs_in_quick_mode(tmp_path, tiny_model):
    sys.path.insert(0, str(BENCH.parent))
    from bench_train_eval import BEFORE

    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BEFORE}^{{commit}}"]).returncode:
        pytest.skip(f"commit {BEFORE}, the bench's point of comparison, is not in this checkout (a shallow clone)")
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--model", str(tiny_model)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=600)  # the tiny model: every part runs, in seconds
    assert done.returncode == 0, done.stderr[-3000:]
    assert "workbench tok/s / bare tok/s = " in done.stdout and "equal predictions: " in done.stdout
    assert "generation (gsm8k-demo: 4 benchmark rows" in done.stdout and "identical generations: " in done.stdout


def test_training_scores_only_the_labelled_positions_with_this_trl():
    """tasks.backends.training relies on trl's fused LM head reading `_use_triton` to decide whether to project only
    the positions with a label (1.42x faster training on a CPU, the same adapter bit for bit: docs/development.md).
    If trl renames it, this fails instead of the speed-up disappearing silently."""
    import torch
    import trl.trainer.utils as trl_utils

    from tasks.backends.training import labelled_positions_only

    assert labelled_positions_only()
    assert trl_utils._use_triton(torch.device("cpu"))
    assert "compact = _use_triton(" in __import__("inspect").getsource(trl_utils.add_fused_lm_head)
