"""Experiments: a run (pipeline, run), the threshold sweep, the comparison, the defence grid, the budget and
smoothness curves, blind settings, verification, time estimates; each computes and returns plain results."""
