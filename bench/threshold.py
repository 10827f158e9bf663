"""Server-side work for one move of the Threshold page's slider, on the full training set's scores.

    python bench/threshold.py [--run checkpoints/paper] [--moves 50]

Times what the page's fragment computes and builds per move (the 2x2 counts, the operating point, the
four plotly figures, the sweep lookup) and prints it against the 100 ms budget, side by side with the
naive alternative that also rescores the filter and rebuilds the curves with scikit-learn on every move.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.experiments.evaluate import filter_quality  # noqa: E402
from core.experiments.run import SHIPPED_RUN, load_run  # noqa: E402
from core.experiments.sweep import accuracy_at  # noqa: E402
from core.reporting import explore  # noqa: E402

BUDGET_MS = 100.0


def one_move(scores, mask, curves, hist, sweep, threshold) -> None:
    counts = explore.threshold_counts(scores, mask, threshold)
    fpr, tpr = explore.operating_point(scores, mask, threshold)
    if sweep:
        accuracy_at(sweep, threshold)
    centres = (hist["edges"][:-1] + hist["edges"][1:]) / 2
    figures = [
        go.Figure([go.Bar(x=centres, y=hist["clean"]), go.Bar(x=centres, y=hist["poisoned"])]),
        go.Figure([go.Scatter(x=curves["fpr"], y=curves["tpr"]), go.Scatter(x=[fpr], y=[tpr])]),
        go.Figure(
            [
                go.Scatter(x=curves["recall"], y=curves["precision"]),
                go.Scatter(x=[counts["recall"]], y=[counts["precision"]]),
            ]
        ),
    ]
    figures[0].add_vline(threshold)
    for figure in figures:
        figure.to_json()  # what st.plotly_chart serialises


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(SHIPPED_RUN))
    parser.add_argument("--moves", type=int, default=50)
    args = parser.parse_args()
    try:
        run = load_run(args.run)
        scores, mask, sweep = run.train_scores.numpy().astype(np.float64), run.poison_mask.numpy(), run.sweep
        source = args.run
    except Exception:  # no run: synthetic scores of the same size
        rng = np.random.default_rng(0)
        scores, mask, sweep = rng.gamma(2.0, 0.01, 35_288), rng.random(35_288) < 0.1, None
        source = "synthetic scores (no run found)"
    curves = explore.curves(scores, mask)
    edges = np.linspace(scores.min(), np.quantile(scores, 0.999), 81)
    hist = {
        "edges": edges,
        "clean": np.histogram(scores[~mask], edges)[0],
        "poisoned": np.histogram(scores[mask], edges)[0],
    }
    thresholds = np.quantile(scores, np.linspace(0.05, 0.95, args.moves))

    one_move(scores, mask, curves, hist, sweep, float(thresholds[0]))  # warm-up: plotly's first figure is slow
    started = time.perf_counter()
    for threshold in thresholds:
        one_move(scores, mask, curves, hist, sweep, float(threshold))
    ours = (time.perf_counter() - started) / args.moves * 1000

    scores_t, mask_t = torch.from_numpy(scores), torch.from_numpy(mask)
    started = time.perf_counter()
    for threshold in thresholds:
        filter_quality(scores_t, scores_t > float(threshold), mask_t, float(threshold))
        one_move(scores, mask, explore.curves(scores, mask), hist, sweep, float(threshold))
    naive = (time.perf_counter() - started) / args.moves * 1000

    print(f"{len(scores):,} training scores from {source}, {args.moves} moves")
    print(f"{'per slider move':<44}{'ms':>8}{'budget ratio':>14}")
    print(f"{'page fragment (counts, point, figures)':<44}{ours:>8.1f}{ours / BUDGET_MS:>14.2f}")
    print(f"{'naive: + sklearn rescoring, curves per move':<44}{naive:>8.1f}{naive / BUDGET_MS:>14.2f}")
    print(f"speed-up of ours over naive: {naive / ours:.1f}x; within budget: {ours < BUDGET_MS}")


if __name__ == "__main__":
    main()
