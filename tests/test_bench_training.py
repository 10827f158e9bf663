"""The training bench runs at a tiny size in CI and prints a ratio to today's recipe for every lever."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.training import RECIPES

ROOT = Path(__file__).resolve().parents[1]


def test_training_bench_tiny_prints_every_recipe_and_resumes(tmp_path):
    out = tmp_path / "training.json"
    command = [sys.executable, str(ROOT / "bench" / "training.py"), "--tiny", "--out", str(out)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout
    table = first.split("today / it")[1]
    for name in RECIPES:
        row = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert row.split()[-2].endswith("x")  # the ratio column
    assert "GFLOP per training image" in first
    stored = json.loads(out.read_text())
    assert set(stored["recipes"]) == set(RECIPES) and stored["setting"]["tiny"]
    # A rerun keeps what the file holds: nothing is trained again, the same numbers print.
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout
    assert "  today:" not in second and json.loads(out.read_text())["recipes"] == stored["recipes"]


def test_sweep_point_bench_tiny_prints_both_points_the_ratio_and_the_estimate():
    command = [sys.executable, str(ROOT / "bench" / "sweep_point.py"), "--tiny"]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=900, check=True, cwd=ROOT).stdout
    rows = {line[:22].strip(): line[22:].split() for line in printed.splitlines() if line.startswith("recipe ")}
    assert set(rows) == {"recipe 2, sweep v2", "recipe 3, sweep v3"}
    for steps, training, measuring, total, estimate, ratio in rows.values():
        assert int(steps) == 20 and float(estimate) > 0 and ratio.endswith("x")
        assert abs(float(training) + float(measuring) - float(total)) <= 1  # whole seconds, rounded
    assert "new point / today's:" in printed


def test_defence_cost_bench_tiny_prints_each_defences_ratio_to_a_plain_training(tmp_path):
    out = tmp_path / "cost.json"
    command = [sys.executable, str(ROOT / "bench" / "defence_cost.py"), "--tiny", "--out", str(out)]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=900, check=True, cwd=ROOT).stdout
    stored = json.loads(out.read_text())
    assert set(stored["defences"]) == {"jpeg", "grayscale_noise"} and stored["plain_seconds"] > 0
    for name, cost in stored["defences"].items():
        assert cost["ratio"] == pytest.approx(cost["seconds"] / stored["plain_seconds"], abs=0.02)
        assert f"{cost['ratio']:.2f}x plain" in next(line for line in printed.splitlines() if line.startswith(name))
    assert "plain training before the defences" in printed and stored["plain_seconds_after"] > 0
