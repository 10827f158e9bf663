"""How good is the Overview's time estimate of *Run the experiment*? Estimate, then measure, side by side.

    python bench/estimate.py [--preset quick] [--threads 2] [--curve]

Prints core.experiments.live.experiment_seconds for the preset's run (and, with --curve, its one-seed threshold curve
over the
app's coarse shares: DAE, random and oracle at 0-50%), then times `python -m core run` (and `python -m core sweep`) in
a fresh model cache with the same thread count, and the ratio measured / estimated. Nothing else should run beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COARSE_SHARES = ("0", "0.1", "0.2", "0.3", "0.4", "0.5")  # ui.jobs.COARSE_SHARES (the app's first curve)


def timed(argv: list[str], threads: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "--threads", str(threads), *argv], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="quick", choices=("tiny", "quick", "paper"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--curve", action="store_true", help="also the one-seed threshold curve at the coarse shares")
    args = parser.parse_args()

    import torch

    from core.engine.data import load_gtsrb
    from core.experiments.live import experiment_seconds
    from core.experiments.pipeline import preset
    from core.experiments.sweep import SweepConfig

    torch.set_num_threads(args.threads)
    config = preset(args.preset)
    sweep = SweepConfig(drop_shares=tuple(float(share) for share in COARSE_SHARES), seeds=(0,))
    counts = (len(load_gtsrb("train")), len(load_gtsrb("test")))
    estimate = experiment_seconds(config, counts, sweep)
    with tempfile.TemporaryDirectory() as folder:
        out, cache = Path(folder) / "run", Path(folder) / "cache"
        run = timed(["run", "--preset", args.preset, "--out", str(out), "--cache-dir", str(cache)], args.threads)
        curve = None
        if args.curve:
            sweep_argv = ["sweep", "--run-dir", str(out), "--seeds", "1", "--cache-dir", str(cache), "--drop-shares"]
            curve = timed([*sweep_argv, *COARSE_SHARES], args.threads)
    print(f"preset {args.preset}, {args.threads} thread(s), {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"{'':<34}{'estimated s':>12}{'measured s':>12}{'measured / estimated':>22}")
    print(f"{'run (python -m core run)':<34}{estimate['run']:>12.0f}{run:>12.0f}{run / estimate['run']:>22.2f}")
    if curve is not None:
        name = f"curve ({estimate['points']} points, one seed)"
        print(f"{name:<34}{estimate['curve']:>12.0f}{curve:>12.0f}{curve / estimate['curve']:>22.2f}")


if __name__ == "__main__":
    main()
