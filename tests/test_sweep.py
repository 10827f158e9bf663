"""The threshold sweep: a fixed optimiser-step budget, random and oracle controls, seeds, resuming, the app."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from core.cli import main
from core.engine.data import ImageSet
from core.engine.models import Classifier, ClassifierConfig
from core.engine.train import TrainConfig, hard_label_loss, train
from core.experiments.run import Run
from core.experiments.sweep import SweepConfig, accuracy_at, curves_of, distil_kept, dropped_at, filter_scores
from tests.helpers import tiny_config


def toy_set(n: int, seed: int = 0) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return ImageSet(images, torch.randint(0, 4, (n,), generator=generator))


def test_steps_fixes_the_optimiser_steps_whatever_the_training_set_size():
    experiment = replace(
        tiny_config(),
        classifier=ClassifierConfig(num_classes=4, width=4, hidden=8),
        classifier_train=TrainConfig(epochs=1, batch_size=16, augment=True),
    )
    train_set = toy_set(96)
    events: dict[int, list] = {}
    for kept_count in (96, 40):  # two thresholds: 96 and 40 images kept, batches of 16
        kept = torch.zeros(96, dtype=torch.bool)
        kept[:kept_count] = True
        log = events.setdefault(kept_count, [])
        distil_kept(train_set, kept, experiment, 7, 0, progress=lambda stage, step, total, log=log: log.append(total))
    # teacher and student: 7 steps each at both thresholds, though 96 images make 6 batches a pass and 40 make 2
    assert events[96] == events[40] == [7] * 14


def test_steps_equal_to_whole_epochs_trains_exactly_as_epochs_do():
    data = toy_set(64, seed=1)
    config = TrainConfig(epochs=3, batch_size=16, augment=True, seed=5)
    weights = []
    for steps in (None, 3 * (64 // 16)):
        torch.manual_seed(0)
        model = Classifier(ClassifierConfig(num_classes=4, width=4, hidden=8))
        train(model, data.images, data.labels, hard_label_loss(), config, torch.device("cpu"), steps=steps)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train(model, data.images, data.labels, hard_label_loss(), config, torch.device("cpu"), steps=0)


def test_random_and_oracle_filters_drop_the_stated_shares():
    n, poisons = 2000, 200
    poison_mask = torch.zeros(n, dtype=torch.bool)
    poison_mask[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:poisons]] = True
    detector = torch.rand(n, generator=torch.Generator().manual_seed(1))
    for share in (0.05, 0.3, 0.6):
        count = round(share * n)
        for name in ("detector", "random", "oracle"):
            dropped, threshold = dropped_at(filter_scores(name, detector, poison_mask, seed=0), share)
            assert int(dropped.sum()) == count, (name, share)
        # the oracle drops poisons first: all of them once the share allows, else only poisons
        oracle, _ = dropped_at(filter_scores("oracle", detector, poison_mask, 0), share)
        assert int((oracle & poison_mask).sum()) == min(count, poisons)
        # random ignores the mask: it drops about `share` of the poisons (binomial, 4 standard deviations)
        random, _ = dropped_at(filter_scores("random", detector, poison_mask, 0), share)
        recall = float((random & poison_mask).sum()) / poisons
        assert abs(recall - share) < 4 * (share * (1 - share) / poisons) ** 0.5
        # the detector's threshold reproduces its drop on the slider: scores above it are dropped
        dropped, threshold = dropped_at(detector, share)
        assert torch.equal(dropped, detector > threshold)
    # another seed, another random draw
    first, _ = dropped_at(filter_scores("random", detector, poison_mask, 0), 0.3)
    second, _ = dropped_at(filter_scores("random", detector, poison_mask, 1), 0.3)
    assert not torch.equal(first, second)


def test_sweep_config_rejects_bad_values():
    for bad in (
        {"drop_shares": (0.5,)},
        {"drop_shares": (0.0, 1.0)},
        {"filters": ("psychic",)},
        {"seeds": (0, 0)},
        {"steps": 0},
        {"robust_test_subset": 0.0},
        {"attack_test_subset": 1.5},
    ):
        with pytest.raises(ValueError):
            SweepConfig(**bad)


def test_accuracy_at_returns_measured_points_and_interpolates_between_them():
    def measurement(seed, share, threshold, clean):
        metrics = {"clean_acc": clean, "fgsm_acc": clean / 2, "ifgsm_acc": clean / 3, "adaptive_acc": clean / 4}
        return {"seed": seed, "filter": "detector", "target_share": share, "drop_share": share}, {
            "threshold": threshold,
            "precision": 0.0,
            "recall": 0.0,
            **metrics,
        }

    rows = [
        a | b
        for a, b in (
            measurement(s, share, t, c + s / 10) for s in (0, 1) for share, t, c in ((0, 2.0, 0.5), (0.5, 1.0, 0.7))
        )
    ]
    sweep = {"curves": curves_of(rows)}
    point = sweep["curves"]["detector"][0]
    assert point["n_seeds"] == 2 and point["mean"]["clean_acc"] == pytest.approx(0.55)
    assert point["std"]["clean_acc"] == pytest.approx(0.1 / 2**0.5)
    measured = {**sweep["curves"]["detector"][1]["mean"], "measured": True, "where": "measured", "n_seeds": 2}
    assert accuracy_at(sweep, 1.0) == measured
    halfway = accuracy_at(sweep, 1.5)
    assert not halfway["measured"] and halfway["clean_acc"] == pytest.approx((0.55 + 0.75) / 2)
    assert halfway["where"] == "interpolated"
    # above the 0%-dropped point's threshold the same samples are kept: that point, measured
    above = accuracy_at(sweep, 3.0)
    assert above["where"] == "measured" and above["clean_acc"] == pytest.approx(0.55)
    # below the lowest measured threshold nothing was measured: no number, never the nearest point's (issue 34)
    below = accuracy_at(sweep, 0.5)
    assert below["where"] == "not measured" and below["clean_acc"] is None and not below["measured"]


def test_sweep_end_to_end_in_the_cli_resumes_and_shows_in_the_app(tiny_run, gtsrb_root, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run.directory, folder)
    command = ["sweep", "--run-dir", str(folder), "--data-root", str(gtsrb_root), "--drop-shares", "0", "0.5"]
    command += ["--seeds", "2", "--steps", "4", "--test-subset", "0.5", "--robust-steps", "2"]
    command += ["--attack-test-subset", "0.5"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "mean ± std over 2 seed(s)" in printed and "4 optimiser steps per model" in printed
    sweep = json.loads((folder / "sweep.json").read_text())
    # The point layout of version 3: clean accuracy on the test subset, the attacks on a stratified half of it, the
    # worst case on a share of that; the printed standard errors are those of these sizes.
    settings = sweep["version"], sweep["config"]
    assert settings[0] == 3
    n_test, n_attacked, n_robust = (settings[1][key] for key in ("n_test", "n_attack_test", "n_robust_test"))
    assert n_robust < n_attacked < n_test and abs(n_attacked - n_test / 2) <= 43
    assert f"clean ±{(0.25 / n_test) ** 0.5:.1%} ({n_test} images)" in printed
    assert f"FGSM / I-FGSM ±{(0.25 / n_attacked) ** 0.5:.1%} ({n_attacked})" in printed
    assert set(sweep["curves"]) == {"detector", "random", "oracle"}
    assert len(sweep["measurements"]) == 2 * 3 * 2
    run = Run.load(folder)
    n_poisoned = int(run.poison_mask.sum())
    for points in sweep["curves"].values():
        assert [p["n_seeds"] for p in points] == [2, 2]
        assert points[1]["drop_share"] == pytest.approx(0.5, abs=1 / len(run.poison_mask))
        for point in points:
            assert all(0 <= value <= 1 for value in point["mean"].values())
    oracle_half = [m for m in sweep["measurements"] if m["filter"] == "oracle" and m["target_share"] == 0.5]
    assert all(m["dropped_poisoned"] == n_poisoned for m in oracle_half)  # 10% poisoned < 50% dropped
    # nothing dropped: the same kept set for every filter, trained once per seed
    for seed in (0, 1):
        at_zero = [m for m in sweep["measurements"] if m["seed"] == seed and m["target_share"] == 0]
        assert len({m["kept_digest"] for m in at_zero}) == 1
    # the two seeds trained different students
    zero = sweep["curves"]["detector"][0]
    assert sum(zero["std"].values()) > 0

    # A rerun with one more filter share keeps the 12 finished measurements.
    assert main(command[:6] + ["0", "0.5", "0.7"] + command[8:]) == 0
    again = json.loads((folder / "sweep.json").read_text())
    assert again["measurements"][:12] == sweep["measurements"] and len(again["measurements"]) == 18

    from tests.helpers import app, assert_clean, metric

    at = app(str(folder))
    at.run()
    at.switch_page("pages/threshold.py").run()
    assert_clean(at)
    assert any("interpolated between measured points" in md.value or "measured at" in md.value for md in at.markdown)
    assert metric(at, "adaptive worst case").endswith("%")
    assert any("at random" in caption.value and "oracle" in caption.value for caption in at.caption)
    at.radio(key="sweep_metric").set_value("adaptive_acc").run()
    assert_clean(at)


def test_gpu_bench_runs_on_cpu_at_a_tiny_size_and_prints_its_stage_table(gtsrb_root):
    """bench/gpu.py is meant for a GPU; here it runs the same path on CPU on 4% of GTSRB, one epoch."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, str(root / "bench" / "gpu.py"), "--preset", "quick", "--train-subset", "0.04"]
    command += ["--test-subset", "0.02", "--epochs", "1"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split()[0]: float(line.split()[1]) for line in result.stdout.splitlines()[2:11]}
    assert set(rows) == {
        "load",
        "surrogate",
        "poisons",
        "DAE",
        "detector",
        "classifiers",
        "student",
        "evaluation",
        "other",
    }
    total = next(line for line in result.stdout.splitlines() if line.startswith("end to end"))
    assert abs(sum(rows.values()) - float(total.split()[3])) < 0.5  # the rows add up to the end-to-end time
    assert all(rows[stage] > 0 for stage in ("surrogate", "DAE", "classifiers", "student", "evaluation"))
    assert "live threshold point:" in result.stdout


def test_a_batched_sweep_trains_the_same_kept_sets_as_one_model(tiny_run, gtsrb_root, tmp_path, monkeypatch):
    """--batch-models 8: the distinct kept sets of a seed train as one batched teacher and one batched student
    (core.engine.batched); every point is measured, on the same kept sets as the sequential sweep."""
    import core.experiments.sweep

    calls, real = [], core.experiments.sweep.train_batched

    def counted(models, *args, **kwargs):
        calls.append(len(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(core.experiments.sweep, "train_batched", counted)  # the name the sweep calls
    results = {}
    for batch_models in (1, 8):
        folder = tmp_path / f"run{batch_models}"
        shutil.copytree(tiny_run.directory, folder)
        command = ["sweep", "--run-dir", str(folder), "--data-root", str(gtsrb_root), "--drop-shares", "0", "0.3"]
        command += ["0.6", "--seeds", "1", "--steps", "3", "--test-subset", "0.5", "--robust-steps", "1"]
        command += ["--filters", "detector", "random", "--batch-models", str(batch_models)]
        assert main(command) == 0
        results[batch_models] = json.loads((folder / "sweep.json").read_text())
    sequential, batched = results[1], results[8]
    assert batched["config"]["batch_models"] == 8
    digests = [[m["kept_digest"] for m in sweep["measurements"]] for sweep in (sequential, batched)]
    assert digests[0] == digests[1] and len(set(digests[1])) == 5  # 0% dropped is one kept set for both filters
    for m in batched["measurements"]:
        assert all(0 <= m[key] <= 1 for key in ("clean_acc", "fgsm_acc", "ifgsm_acc", "adaptive_acc"))
    # one batched teacher + one batched student training for the 5 distinct kept sets (the real trainer, counted)
    assert calls == [5, 5]


def test_a_sweep_on_a_local_ray_instance_equals_the_local_executor(tiny_run, gtsrb_root, tmp_path):
    """The sweep's cells (distinct kept sets per seed) as Ray tasks, the run's images sent once: the same JSON."""
    import ray

    results = {}
    for executor in ("local", "ray"):
        folder = tmp_path / executor
        shutil.copytree(tiny_run.directory, folder)
        command = ["sweep", "--run-dir", str(folder), "--data-root", str(gtsrb_root), "--drop-shares", "0", "0.4"]
        command += ["--seeds", "2", "--steps", "3", "--test-subset", "0.5", "--robust-steps", "1"]
        command += ["--filters", "detector", "random", "--executor", executor, "--cpus-per-cell", "1"]
        assert main(command) == 0
        results[executor] = json.loads((folder / "sweep.json").read_text())
    ray.shutdown()
    assert len(results["ray"]["measurements"]) == 2 * 2 * 2
    for sweep in results.values():  # wall times differ between executors; everything else must not
        # each point records the threads it trained on (--cpus-per-cell 1 on a machine with more)
        assert {measurement["threads"] for measurement in sweep["measurements"]} == {1}
        sweep.pop("seconds")
        for measurement in sweep["measurements"]:
            measurement.pop("seconds")
    assert results["ray"] == results["local"]


def test_report_sweep_states_the_shipped_sweeps_numbers():
    """README's shipped-sweep sentence comes from `python -m core report`: its numbers are those of sweep.json."""
    import json
    import statistics
    from pathlib import Path

    from core.experiments.run import Run
    from core.reporting.report import report_sweep

    folder = Path(__file__).resolve().parents[1] / "checkpoints" / "sweep_paper"
    text = report_sweep(Run.load(folder))
    sweep = json.loads((folder / "sweep.json").read_text())
    assert f"{len(sweep['measurements'])} of 216 points" in text
    zero = [m["clean_acc"] for m in sweep["measurements"] if m["filter"] == "detector" and m["target_share"] == 0]
    assert f"{statistics.mean(zero):.1%} clean" in text
    share = 0.1174  # the sweep's share nearest the run's 10% drop rate
    pick = {(m["filter"], m["seed"]): m["clean_acc"] for m in sweep["measurements"] if m["target_share"] == share}
    differences = [pick[("detector", s)] - pick[("random", s)] for s in (0, 1, 2)]
    assert f"DAE minus random {statistics.mean(differences) * 100:+.1f} ± " in text
    assert f"{statistics.stdev(differences) / 3**0.5 * 100:.1f} points" in text
    # the oracle's largest lift over its own 0%-dropped student, paired by seed (README's sweep_tap sentence)
    tap = Path(__file__).resolve().parents[1] / "checkpoints" / "sweep_tap"
    measured = json.loads((tap / "sweep.json").read_text())["measurements"]
    oracle = {(m["target_share"], m["seed"]): m["clean_acc"] for m in measured if m["filter"] == "oracle"}
    lifts = {
        share: statistics.mean(oracle[(share, s)] - oracle[(0.0, s)] for s in (0, 1, 2))
        for share, _ in oracle
        if share > 0
    }
    best = max(lifts, key=lifts.get)
    assert f"lift over its 0%-dropped student: {lifts[best] * 100:+.1f} ± " in report_sweep(Run.load(tap))
    assert f"points at {best:.1%} dropped" in report_sweep(Run.load(tap))


def test_shares_are_measured_coarse_to_fine_so_a_partial_sweep_spans_the_range():
    from core.experiments.sweep import coarse_to_fine

    shares = (0.5, 0.0, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
    order = coarse_to_fine(shares)
    assert sorted(order) == sorted(shares)
    assert order[:3] == [0.0, 0.5, 0.15]  # the ends, then the middle of the sorted list
    # every prefix of 4 or more leaves no gap (in positions of the sorted list) wider than half the range
    ranked = sorted(shares)
    for end in range(4, len(order) + 1):
        positions = sorted(ranked.index(share) for share in order[:end])
        assert max(b - a for a, b in zip(positions, positions[1:])) <= len(ranked) // 2


def test_one_seed_gaps_carry_the_test_noise_standard_error():
    """report's one-seed sweep lines: DAE minus each control at each share, with sqrt(a(1-a)/n + b(1-b)/n)."""
    from core.reporting.report import one_seed_sweep_gaps

    def point(name, share, clean, worst):
        return {"seed": 0, "filter": name, "target_share": share, "clean_acc": clean, "adaptive_acc": worst}

    sweep = {
        "config": {"seeds": [0], "drop_shares": [0.0, 0.5], "n_test": 10_000, "n_robust_test": 400},
        "measurements": [
            point("detector", 0.0, 0.98, 0.6),
            point("detector", 0.5, 0.96, 0.5),
            point("random", 0.5, 0.98, 0.5),
        ],
    }
    lines = one_seed_sweep_gaps(sweep)
    assert len(lines) == 2 and lines[1].strip().startswith("50.0% dropped")  # no line for 0% dropped
    se = (0.96 * 0.04 / 10_000 + 0.98 * 0.02 / 10_000) ** 0.5 * 100  # 0.24 points
    assert f"DAE - random clean -2.0 ± {se:.1f}" in lines[1]
    assert "DAE - random worst +0.0 ± 3.5" in lines[1]  # sqrt(2 * 0.25 / 400) = 3.5 points
    assert "oracle" not in lines[1]  # no oracle point at that share


def test_a_sweep_resumed_part_way_still_reports_its_complete_seeds_gaps(tmp_path):
    """While a second seed is being added point by point (the shipped paper sweep), report keeps printing the one
    complete seed's gaps with their test noise (README quotes them); it printed none once a second seed had begun."""
    import json
    import shutil
    from pathlib import Path

    from core.experiments.run import Run
    from core.reporting.report import report_sweep

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "paper"
    folder = tmp_path / "paper"
    shutil.copytree(shipped, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    for name in ("scores.safetensors", "poisons.safetensors"):
        shutil.copy(shipped / name, folder / name)
    sweep = json.loads((shipped / "sweep.json").read_text())
    seed_zero = [m for m in sweep["measurements"] if m["seed"] == 0]
    partial = {**sweep, "config": {**sweep["config"], "seeds": [0, 1, 2]}}
    partial["measurements"] = seed_zero + [{**m, "seed": 1} for m in seed_zero if m["target_share"] in (0.0, 0.5)]
    (folder / "sweep.json").write_text(json.dumps(partial))
    text = report_sweep(Run.load(folder))
    assert "1 complete seed(s) [0]" in text and "seed 0, gaps per share" in text
    at_ten = {m["filter"]: m["clean_acc"] for m in seed_zero if m["target_share"] == 0.1}
    assert f"DAE - random clean {(at_ten['detector'] - at_ten['random']) * 100:+.1f} ± " in text


def test_gaps_per_share_are_paired_by_seed_once_two_seeds_are_complete():
    """With two complete seeds report prints, per share, the mean of the per-seed DAE - control differences with
    their standard error over seeds (it printed no per-share gap at all past one seed)."""
    from core.reporting.report import seed_paired_sweep_gaps

    def point(seed, name, share, clean, worst):
        return {"seed": seed, "filter": name, "target_share": share, "clean_acc": clean, "adaptive_acc": worst}

    sweep = {
        "config": {"seeds": [0, 1], "drop_shares": [0.0, 0.5], "n_test": 10_000, "n_robust_test": 400},
        "measurements": [
            point(0, "detector", 0.5, 0.96, 0.50),
            point(0, "random", 0.5, 0.98, 0.50),
            point(1, "detector", 0.5, 0.95, 0.40),
            point(1, "random", 0.5, 0.98, 0.50),
        ],
    }
    lines = seed_paired_sweep_gaps(sweep, [0, 1])
    assert len(lines) == 2 and "SE over 2 seeds" in lines[0]
    # differences -2 and -3 points: mean -2.5, SE = std / sqrt(2) = 0.707 / 1.414 = 0.5 points (above the test noise)
    assert "DAE - random clean -2.5 ± 0.5 (z -5.0)" in lines[1]
    assert "DAE - random worst -5.0 ± 5.0 (z -1.0)" in lines[1]
    assert "oracle" not in lines[1]
    # two seeds that agree exactly: the SE is the test noise of the mean, not 0
    for point in sweep["measurements"]:
        if point["seed"] == 1:
            point.update(clean_acc=0.96 if point["filter"] == "detector" else 0.98, adaptive_acc=0.5)
    noise = ((0.96 * 0.04 + 0.98 * 0.02) * 2 / 10_000) ** 0.5 / 2 * 100
    assert f"DAE - random clean -2.0 ± {noise:.1f}" in seed_paired_sweep_gaps(sweep, [0, 1])[1]
