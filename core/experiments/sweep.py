"""Threshold sweep: the distilled student's accuracy as a function of how much the filter drops, with controls.

For each drop share (24 by default, 0 to 90% of the training set) three filters decide what to drop:
  detector  the run's score: drop the samples scored highest (a threshold at that quantile)
  random    drop that share uniformly at random: what a detector must beat to be worth anything
  oracle    drop poisons first (then clean samples at random): the best any filter could do
Teacher and student at T train on what is kept, each with a FIXED number of optimiser steps (the run's recipe at
0% dropped), so dropping data never also means less training; each student is measured clean, with the paper's
FGSM / I-FGSM, and with the adaptive worst case of core.attacks.robust. Every point is repeated over seeds (mean, std).
The app reads the curves, so dragging the threshold shows measured points and interpolates between them.

Points whose kept set is identical (0% dropped, for every filter) are trained once per seed. The result is written
after every trained point and a rerun keeps the points finished under the same settings.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from core.attacks.robust import RobustEvalConfig, attack_suite
from core.defences.distill import DistillConfig, soft_labels, train_classifier, train_student
from core.engine.batched import train_batched
from core.engine.data import ImageSet, load_splits, stratified_split
from core.engine.executor import Cell, ExecutorConfig, run_cells
from core.engine.models import Classifier
from core.engine.recipe import init_seed, repeat_seed, sampling_seed
from core.engine.storage import ResultFile
from core.engine.train import hard_label_loss, machine, soft_label_loss
from core.experiments.evaluate import accuracy, attack_test_index, filter_quality, robust_test_set, robustness
from core.experiments.pipeline import ExperimentConfig, _seeded

if TYPE_CHECKING:
    from core.experiments.run import Run

# Bump when what a sweep point trains or measures changes; sweep.json files of another version are not shown.
SWEEP_VERSION = 3  # 1: 12 points, 3 epochs whatever was kept, one seed, detector only
# 2: clean, FGSM and I-FGSM on the same 15% of the test set. 3: clean on the whole test set, the attacks on a
# stratified subset of it (their binomial standard errors printed), so a point costs training, not measurement.
READABLE_VERSIONS = (2, 3)  # drawn by the app and the report; only a file of SWEEP_VERSION is resumed
FILTERS = ("detector", "random", "oracle")
METRICS = ("clean_acc", "fgsm_acc", "ifgsm_acc", "adaptive_acc")
DENSE_DROP_SHARES = tuple(round(0.9 * index / 23, 4) for index in range(24))  # 0, 3.9%, ..., 90%


@dataclass(frozen=True)
class SweepConfig:
    drop_shares: tuple[float, ...] = DENSE_DROP_SHARES
    filters: tuple[str, ...] = FILTERS
    seeds: tuple[int, ...] = (0, 1, 2)  # repeats: repeat 0 draws the run's own sweep seed
    steps: int | None = None  # optimiser steps per teacher and per student; None: the run's epochs on all of train
    test_subset: float = 1.0  # stratified share of the run's test set each student's clean accuracy is measured on
    attack_test_subset: float = 0.1  # share of that set attacked with the run's FGSM / I-FGSM
    robust_test_subset: float = 0.3  # share of the attacked set attacked for the adaptive worst case
    robust_steps: int = 10  # iterations of the adaptive attacks
    # kept sets trained as one batched model (core.engine.batched); 1: one after another (CPU: batching buys nothing).
    # Batched students draw dropout masks in another order, so a sweep's numbers depend on it (it is in the key).
    batch_models: int = 1

    def __post_init__(self):
        if len(self.drop_shares) < 2 or not all(0 <= share < 1 for share in self.drop_shares):
            raise ValueError("drop_shares needs at least two values in [0, 1)")
        unknown = [name for name in self.filters if name not in FILTERS]
        if unknown or not self.filters:
            raise ValueError(f"unknown or missing filter {unknown}: choose from {', '.join(FILTERS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError("seeds must be distinct non-negative repeats, at least one")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not all(0 < share <= 1 for share in (self.test_subset, self.attack_test_subset, self.robust_test_subset)):
            raise ValueError("test_subset, attack_test_subset and robust_test_subset must be in (0, 1]")
        if self.robust_steps < 1:
            raise ValueError(f"robust_steps must be >= 1, got {self.robust_steps}")
        if not 1 <= self.batch_models <= 256:
            raise ValueError(f"batch_models must be in 1..256, got {self.batch_models}")


def fixed_steps(experiment: ExperimentConfig, n_train: int) -> int:
    """The optimiser steps of the run's recipe on the whole training set: every sweep model gets this many."""
    train = experiment.classifier_train
    return max(1, round(train.epochs * max(1, n_train // min(train.batch_size, n_train))))


def coarse_to_fine(shares) -> list[float]:
    """The shares in the order a sweep measures them: the smallest and the largest, then the middle one of the widest
    gap left (by position in the sorted list), and so on: every prefix spreads over the whole range."""
    ordered = sorted(shares)
    if len(ordered) <= 2:
        return ordered
    order, gaps = [0, len(ordered) - 1], [(0, len(ordered) - 1)]
    while gaps:
        low, high = gaps.pop(0)  # widest first: gaps are queued widest to narrowest
        if high - low < 2:
            continue
        middle = (low + high) // 2
        order.append(middle)
        gaps += [(low, middle), (middle, high)]
        gaps.sort(key=lambda gap: gap[0] - gap[1])
    return [ordered[index] for index in order]


def shares_around(centre: float, count: int, width: float = 0.1, top: float = 0.9) -> tuple[float, ...]:
    """`count` drop shares evenly spread over centre +- width (inside 0..top), rounded to 0.1%: where a sweep adds
    points once its coarse curve stands (the share the run's own threshold drops)."""
    if count < 1:
        return ()
    low, high = max(0.0, centre - width), min(top, centre + width)
    if count == 1:
        return (round(centre, 3),)
    return tuple(round(low + (high - low) * index / (count - 1), 3) for index in range(count))


def filter_scores(name: str, scores: torch.Tensor, poison_mask: torch.Tensor, seed: int) -> torch.Tensor:
    """What each filter ranks the training set by (it drops the highest first)."""
    if name == "detector":
        return scores.float()
    generator = torch.Generator().manual_seed(sampling_seed(seed, "random_filter"))
    noise = torch.rand(len(scores), generator=generator)
    return noise if name == "random" else poison_mask.float() + 0.5 * noise  # oracle: every poison above every clean


def dropped_at(ranking: torch.Tensor, share: float) -> tuple[torch.Tensor, float]:
    """(dropped mask, threshold): the round(share * n) highest-ranked samples; the threshold is the highest kept
    score, so `ranking > threshold` drops them (for the detector: the slider value that drops this share)."""
    n = len(ranking)
    count = min(round(share * n), n - 1)  # always keep something to train on
    order = torch.argsort(ranking, descending=True, stable=True)
    dropped = torch.zeros(n, dtype=torch.bool)
    dropped[order[:count]] = True
    return dropped, float(ranking[order[count]])


def distil_kept(
    train: ImageSet,
    kept_mask: torch.Tensor,
    experiment: ExperimentConfig,
    steps: int,
    seed: int,
    temperature: float | None = None,
    progress=None,
    should_stop=None,
):
    """Teacher and student at T on the kept samples, `steps` optimiser steps each. Returns (teacher, student)."""
    temperature = experiment.temperature if temperature is None else temperature
    kept = train.subset(torch.nonzero(kept_mask).flatten())
    if len(kept) == 0:
        raise ValueError("this threshold drops every training sample: nothing is left to train on; raise it")
    train_config = _seeded(experiment.classifier_train, repeat_seed(experiment.seed, seed), "sweep")
    distill_config = DistillConfig(temperature, experiment.classifier, train_config)
    report = (
        (lambda stage: lambda event: progress(stage, event.step, event.total_steps))
        if progress
        else (lambda stage: None)
    )
    teacher = train_classifier(
        kept, experiment.classifier, train_config, temperature, report("training teacher"), should_stop, steps=steps
    )
    student = train_student(
        kept.images,
        soft_labels(teacher, kept.images, temperature),
        distill_config,
        report("training student"),
        should_stop,
        steps=steps,
    )
    return teacher, student


def distil_at_threshold(
    train: ImageSet,
    scores: torch.Tensor,
    threshold: float,
    experiment: ExperimentConfig,
    steps: int,
    temperature: float | None = None,
    progress=None,
    should_stop=None,
    seed: int = 0,
):
    """Drop training samples scored above threshold; teacher and student at T on the rest, `steps` steps each.
    Returns (teacher, student, kept mask)."""
    kept_mask = scores <= threshold
    teacher, student = distil_kept(train, kept_mask, experiment, steps, seed, temperature, progress, should_stop)
    return teacher, student, kept_mask


def attack_subset(test: ImageSet, share: float, seed: int) -> ImageSet:
    """The stratified share of a student's test images that FGSM / I-FGSM run on (all of them at share 1)."""
    return test if share >= 1 else test.subset(attack_test_index(test.labels, share, seed))


@dataclass(frozen=True)
class StudentTests:
    """The three test sets a sweep point measures its student on: clean accuracy on `clean`, the run's FGSM /
    I-FGSM on `attacked` (a stratified share of it), the adaptive worst case on `robust` (a share of that)."""

    clean: ImageSet
    attacked: ImageSet
    robust: ImageSet

    @classmethod
    def of(cls, test: ImageSet, attack_share: float, robust_share: float, seed: int) -> "StudentTests":
        attacked = attack_subset(test, attack_share, seed)
        return cls(test, attacked, robust_test_set(attacked, robust_share, seed))

    def sizes(self) -> dict:
        return {"n_test": len(self.clean), "n_attack_test": len(self.attacked), "n_robust_test": len(self.robust)}


def measure_student(student, tests: StudentTests, experiment: ExperimentConfig, robust_steps: int) -> dict:
    """Clean accuracy on tests.clean, FGSM and I-FGSM on tests.attacked, the adaptive worst case (core.attacks.robust)
    on tests.robust."""
    robust_config = RobustEvalConfig(
        eps=experiment.eval_attack.eps, steps=robust_steps, temperature=experiment.temperature, seed=experiment.seed
    )
    adaptive = attack_suite(student, tests.robust, robust_config.eps, robust_config)
    attacked = robustness(student, tests.attacked, experiment.eval_attack)
    clean = (
        attacked["clean_acc"]
        if tests.attacked is tests.clean
        else accuracy(student, tests.clean.images, tests.clean.labels)
    )
    return {
        "clean_acc": clean,
        "fgsm_acc": attacked["fgsm_acc"],
        "ifgsm_acc": attacked["ifgsm_acc"],
        "adaptive_acc": adaptive["worst_case"],
    }


def point_image_counts(n_train: int, n_test: int, config: SweepConfig) -> dict[str, int]:
    """How many images a point of this sweep trains on at most (all of train) and measures on, for a run with
    n_test test images (core.experiments.live.point_seconds estimates its time from these)."""
    clean = round(n_test * config.test_subset)
    attacked = round(clean * config.attack_test_subset)
    return {
        "kept": n_train,
        "test": clean,
        "attack_test": attacked,
        "robust_test": round(attacked * config.robust_test_subset),
    }


def standard_errors(point: dict, settings: dict) -> dict:
    """Binomial standard error of each of a point's mean accuracies over the images it was measured on (one
    seed's; spread over seeds is the curve's std). Version-2 files attacked their whole test subset."""
    n_test = settings["n_test"]
    sizes = {
        "clean_acc": n_test,
        "fgsm_acc": settings.get("n_attack_test", n_test),
        "ifgsm_acc": settings.get("n_attack_test", n_test),
        "adaptive_acc": settings["n_robust_test"],
    }
    return {key: (point[key] * (1 - point[key]) / max(n, 1)) ** 0.5 for key, n in sizes.items()}


def sweep_thresholds(
    train: ImageSet,
    scores: torch.Tensor,
    poison_mask: torch.Tensor,
    test: ImageSet,
    experiment: ExperimentConfig,
    config: SweepConfig,
    progress=None,
    on_point=None,
    previous: dict | None = None,
    executor: ExecutorConfig | None = None,
) -> dict:
    """{"version", "config", "measurements": one per (seed, filter, share), "curves": filter -> points with mean and
    std over seeds, "seconds"}.

    train: the training set as delivered (poisons included); scores: the detector's score of each of its images;
    test: the images each student is measured on. on_point(partial result) is called after each trained point;
    previous: an earlier result whose measurements under the same settings are kept."""
    started = time.time()
    report = progress or (lambda stage, done, total: None)
    steps = config.steps or fixed_steps(experiment, len(train))
    tests = StudentTests.of(test, config.attack_test_subset, config.robust_test_subset, experiment.seed)
    settings = {
        **asdict(config),
        "steps": steps,
        "n_train": len(train),
        **tests.sizes(),
        "eval_attack": experiment.eval_attack.to_dict(),
        "experiment": experiment.to_dict(),
    }
    settings = json.loads(json.dumps(settings))  # as the file holds it
    measurements = kept_measurements(settings, previous)
    done = {(m["seed"], m["filter"], m["target_share"]) for m in measurements}
    total = len(config.seeds) * len(config.filters) * len(config.drop_shares)

    def result() -> dict:
        return {
            "version": SWEEP_VERSION,
            "config": settings,
            "measurements": measurements,
            "curves": curves_of(measurements),
            "seconds": round(time.time() - started, 1),  # this invocation's; each point has its own seconds, threads
            "machine": machine(),
        }

    # Every point still to measure, in the order the file lists them; identical kept sets train once per seed.
    trained: dict[tuple[int, bytes], dict] = {}  # (seed, kept-set digest) -> metrics
    for m in measurements:
        if "kept_digest" in m:
            kept = {key: m[key] for key in (*METRICS, "seconds", "threads") if key in m}
            trained.setdefault((m["seed"], bytes.fromhex(m["kept_digest"])), kept)
    # Seed by seed, shares coarse to fine, every filter at a share before the next: a sweep stopped part-way has whole
    # curves (detector, random and oracle) at fewer shares, not one filter's curve alone.
    tasks = []  # (seed, filter, share, ranking, dropped, threshold, digest)
    for seed in config.seeds:
        rankings = {
            name: filter_scores(name, scores, poison_mask, repeat_seed(experiment.seed, seed))
            for name in config.filters
        }
        for share in coarse_to_fine(config.drop_shares):
            for name, ranking in rankings.items():
                if (seed, name, share) not in done:
                    dropped, threshold = dropped_at(ranking, share)
                    tasks.append((seed, name, share, ranking, dropped, threshold, _digest(~dropped)))

    # One cell per seed and batch of distinct kept sets not yet trained (one set on CPU; config.batch_models on a
    # GPU), run by the executor (core.engine.executor: in this process by default, or on Ray).
    cells, chunk_of = [], {}
    shared = {"train": train, "experiment": experiment, "steps": steps, "tests": tests}
    for seed in config.seeds:
        pending: dict[bytes, torch.Tensor] = {}
        for task_seed, *_, dropped, _, digest in tasks:
            if task_seed == seed and (seed, digest) not in trained:
                pending.setdefault(digest, ~dropped)
        digests = list(pending)
        for start in range(0, len(digests), config.batch_models):
            chunk = digests[start : start + config.batch_models]
            key = f"seed {seed} kept sets {start + 1}-{start + len(chunk)} of {len(digests)}"
            arguments = {**shared, "seed": seed, "kept_masks": [pending[digest] for digest in chunk]}
            cells.append(Cell(key, sweep_cell, {**arguments, "robust_steps": config.robust_steps}))
            chunk_of[key] = (seed, chunk)

    def finished(key: str, cell_result: dict) -> None:
        seed, chunk = chunk_of[key]
        for digest, metrics in zip(chunk, cell_result["metrics"]):
            trained[(seed, digest)] = metrics
        while tasks and (tasks[0][0], tasks[0][6]) in trained:
            seed, name, share, ranking, dropped, threshold, digest = tasks.pop(0)
            quality = filter_quality(ranking, dropped, poison_mask, threshold)
            measurements.append(
                {
                    "seed": seed,
                    "filter": name,
                    "target_share": share,
                    "drop_share": float(dropped.float().mean()),
                    "kept_digest": digest.hex(),
                    **{key: quality[key] for key in ("threshold", "precision", "recall", "f1")},
                    "dropped_poisoned": quality["dropped_poisoned"],
                    "dropped_clean": quality["dropped_clean"],
                    **trained[(seed, digest)],
                }
            )
            done.add((seed, name, share))
        report(f"threshold sweep (seed {seed})", len(done), total)
        if on_point:
            on_point(result())

    report(f"threshold sweep (seed {config.seeds[0]})", len(done), total)
    run_cells(cells, executor, finished)
    report(f"threshold sweep (seed {config.seeds[-1]})", total, total)
    return result()


def sweep_cell(
    train: ImageSet,
    kept_masks: list[torch.Tensor],
    experiment: ExperimentConfig,
    steps: int,
    seed: int,
    tests: StudentTests,
    robust_steps: int,
    progress=None,
) -> dict:
    """One cell of the sweep for core.engine.executor: the students of some kept sets at one seed, each measured, with
    the wall time per kept set (what the Threshold page's estimate of a point is checked against)."""
    started = time.perf_counter()
    students = distil_many(train, kept_masks, experiment, steps, seed)
    metrics = [measure_student(s, tests, experiment, robust_steps) for s in students]
    seconds = round((time.perf_counter() - started) / len(kept_masks), 1)
    # the thread count goes with each point: CPU floats differ between thread counts (core.engine.executor)
    return {"metrics": [{**m, "seconds": seconds, "threads": torch.get_num_threads()} for m in metrics]}


def distil_many(train: ImageSet, kept_masks: list[torch.Tensor], experiment, steps: int, seed: int, should_stop=None):
    """The students of several kept sets at one seed: one after another (core.experiments.sweep.distil_kept), or, for
    more than
    one, teachers and then students as one batched model each (core.engine.batched) when every kept set fills a
    batch."""
    batch = experiment.classifier_train.batch_size
    if len(kept_masks) == 1 or min(int(mask.sum()) for mask in kept_masks) < batch:
        return [distil_kept(train, mask, experiment, steps, seed, should_stop=should_stop)[1] for mask in kept_masks]

    temperature = experiment.temperature
    train_config = _seeded(experiment.classifier_train, repeat_seed(experiment.seed, seed), "sweep")
    subsets = [torch.nonzero(mask).flatten() for mask in kept_masks]

    def fresh(role: str) -> list[Classifier]:  # the inits distil_kept draws: the same for every kept set
        models = []
        for _ in subsets:
            torch.manual_seed(init_seed(train_config.seed, role))
            models.append(Classifier(experiment.classifier))
        return models

    configs = [train_config] * len(subsets)
    labels = [train.labels[subset] for subset in subsets]
    teachers = train_batched(
        fresh("classifier"), train.images, labels, subsets, hard_label_loss(temperature), configs, steps
    )
    soft = [soft_labels(teacher, train.images[subset], temperature) for teacher, subset in zip(teachers, subsets)]
    return train_batched(fresh("student"), train.images, soft, subsets, soft_label_loss(temperature), configs, steps)


def _digest(mask: torch.Tensor) -> bytes:
    return hashlib.sha256(mask.numpy().tobytes()).digest()[:16]


def kept_measurements(settings: dict, previous: dict | None) -> list[dict]:
    """The measurements of an earlier sweep with the same settings (seeds, filters and shares aside) that this one
    asks for; nothing when any other setting differs or the file is of another version."""
    if not previous or previous.get("version") != SWEEP_VERSION:
        return []
    per_point = ("seeds", "filters", "drop_shares")
    earlier = previous.get("config", {})
    if {k: v for k, v in earlier.items() if k not in per_point} != {
        k: v for k, v in settings.items() if k not in per_point
    }:
        return []
    return [
        m
        for m in previous.get("measurements", [])
        if m["seed"] in settings["seeds"]
        and m["filter"] in settings["filters"]
        and m["target_share"] in settings["drop_shares"]
    ]


def curves_of(measurements: list[dict]) -> dict:
    """filter -> [{target_share, drop_share, threshold, precision, recall, n_seeds, mean: {metric}, std: {metric}}]
    sorted by share; threshold, precision and recall are means over seeds (identical for the detector)."""
    curves: dict[str, list[dict]] = {}
    groups: dict[tuple[str, float], list[dict]] = {}
    for m in measurements:
        groups.setdefault((m["filter"], m["target_share"]), []).append(m)
    for (name, share), group in sorted(groups.items(), key=lambda item: (FILTERS.index(item[0][0]), item[0][1])):
        curves.setdefault(name, []).append(
            {
                "target_share": share,
                "n_seeds": len(group),
                **{
                    key: statistics.fmean(m[key] for m in group)
                    for key in ("drop_share", "threshold", "precision", "recall")
                },
                "mean": {key: statistics.fmean(m[key] for m in group) for key in METRICS},
                "std": {key: statistics.stdev([m[key] for m in group]) if len(group) > 1 else 0.0 for key in METRICS},
            }
        )
    return curves


def sweep_run(
    run,
    config: SweepConfig,
    data_root=None,
    download: bool = False,
    progress=None,
    on_point=None,
    previous=None,
    executor: ExecutorConfig | None = None,
) -> dict:
    """The sweep of a finished run, on its stored poisons and DAE scores (nothing of the run is retrained)."""
    c = run.config
    splits = load_splits(data_root, c.trusted_fraction, c.seed, c.train_subset, c.test_subset, download)
    poisoned = run.poisons(splits.train)
    test = student_test_subset(run, splits.test, config.test_subset)
    return sweep_thresholds(
        poisoned.data, run.train_scores, run.poison_mask, test, c, config, progress, on_point, previous, executor
    )


SWEEP_FILE = ResultFile("sweep.json", "python -m core sweep --run-dir {folder} --fresh", ("version",))


def read_sweep_file(path) -> dict | None:
    """A run's sweep.json as written (any version: sweep_thresholds keeps only the points it can reuse), None when
    there is none; a corrupt file raises CheckpointError saying how to remake it."""
    return SWEEP_FILE.read(path)


def usable_sweep(sweep: dict | None) -> dict | None:
    """The sweep if it is of the current version, else None (the app then says how to remake it)."""
    current = sweep and sweep.get("version") in READABLE_VERSIONS
    return sweep if current and "detector" in sweep.get("curves", {}) else None


def accuracy_at(sweep: dict, threshold: float, tolerance: float = 1e-12) -> dict:
    """The detector curve's mean accuracies at a threshold, and `where` they come from: "measured" (within `tolerance`
    of a measured threshold, the app passes half a slider step; or above the 0%-dropped point's, which keeps the same
    samples), "interpolated" (linearly, between the measured points around it) or "not measured" (outside the measured
    range: every accuracy None, never the nearest point's). "measured": whether it is the first."""
    points = sorted(sweep["curves"]["detector"], key=lambda point: point["threshold"])
    nearest = min(points, key=lambda point: abs(point["threshold"] - threshold))
    keeps_all = points[-1]["target_share"] == 0 and threshold >= points[-1]["threshold"]
    if abs(nearest["threshold"] - threshold) <= tolerance or keeps_all:
        chosen = points[-1] if keeps_all else nearest
        return {**chosen["mean"], "measured": True, "where": "measured", "n_seeds": chosen["n_seeds"]}
    if not points[0]["threshold"] < threshold < points[-1]["threshold"]:
        return {**dict.fromkeys(METRICS), "measured": False, "where": "not measured", "n_seeds": 0}
    for low, high in zip(points, points[1:]):
        if low["threshold"] <= threshold <= high["threshold"]:
            weight = (threshold - low["threshold"]) / max(high["threshold"] - low["threshold"], 1e-12)
            values = {key: low["mean"][key] + weight * (high["mean"][key] - low["mean"][key]) for key in METRICS}
            seeds = min(low["n_seeds"], high["n_seeds"])
            return values | {"measured": False, "where": "interpolated", "n_seeds": seeds}
    raise AssertionError("unreachable")


def curve_at_share(sweep: dict, name: str, drop_share: float) -> dict:
    """A filter's mean accuracies at a drop share, linearly interpolated between its measured points (the random
    and oracle controls beside the detector at the share the slider drops)."""
    points = sorted(sweep["curves"][name], key=lambda point: point["drop_share"])
    shares = [point["drop_share"] for point in points]
    if drop_share <= shares[0]:
        return dict(points[0]["mean"])
    if drop_share >= shares[-1]:
        return dict(points[-1]["mean"])
    for low, high in zip(points, points[1:]):
        if low["drop_share"] <= drop_share <= high["drop_share"]:
            weight = (drop_share - low["drop_share"]) / max(high["drop_share"] - low["drop_share"], 1e-12)
            return {key: low["mean"][key] + weight * (high["mean"][key] - low["mean"][key]) for key in METRICS}
    raise AssertionError("unreachable")


def sweep_steps(run: "Run") -> int:
    """Optimiser steps per teacher and per student at any threshold: the run's sweep's, else the run's recipe on
    all of train (core.experiments.sweep.fixed_steps), so a point trained here is comparable with the sweep's."""
    return run.sweep["config"]["steps"] if run.sweep else fixed_steps(run.config, len(run.poison_mask))


def point_images(run: "Run") -> dict[str, int]:
    """How many images a point at any threshold trains and measures on (core.experiments.live.point_seconds): all of
    train (an
    upper bound on what is kept), and the test sets of the run's sweep, else of a default sweep."""
    if run.sweep:
        settings = run.sweep["config"]
        n_test = settings["n_test"]
        return {
            "kept": settings["n_train"],
            "test": n_test,
            "attack_test": settings.get("n_attack_test", n_test),
            "robust_test": settings["n_robust_test"],
        }
    return point_image_counts(len(run.poison_mask), run.results["data"]["n_test"], SweepConfig())


def sweep_robust_steps(run: "Run") -> int:
    """Iterations of the adaptive attacks a point is measured with: the run's sweep's, else a default sweep's."""
    return run.sweep["config"]["robust_steps"] if run.sweep else SweepConfig().robust_steps


def train_at_threshold(
    run: "Run", splits, score: str, threshold: float, temperature: float, steps: int, progress=None, should_stop=None
) -> tuple[dict, torch.nn.Module]:
    """Teacher and student at T on the run's stored training samples whose `score` is at most threshold, `steps`
    optimiser steps each, measured like the sweep (its test subset, the run's paper-style attacks).
    Returns (point, student)."""
    poisoned = run.poisons(splits.train)
    _, student, kept = distil_at_threshold(
        poisoned.data, run.scores_of(score), threshold, run.config, steps, temperature, progress, should_stop
    )
    if progress is not None:
        progress("measuring the student (clean, FGSM, I-FGSM, adaptive worst case)", 0, 1)
    settings = run.sweep["config"] if run.sweep else asdict(SweepConfig())
    test = student_test_subset(run, splits.test, settings["test_subset"])
    # version-2 sweeps attacked their whole test subset
    tests = StudentTests.of(
        test, settings.get("attack_test_subset", 1.0), settings["robust_test_subset"], run.config.seed
    )
    point = {
        "score": score,
        "threshold": threshold,
        "temperature": temperature,
        "steps": steps,
        "kept": int(kept.sum()),
        **measure_student(student, tests, run.config, settings["robust_steps"]),
    }
    return point, student


POINTS_VERSION = 1
POINTS_FILE = ResultFile("points.json", "python -m core point --run-dir {folder} --threshold T", ("version", "points"))


def measured_point(
    run: "Run", splits, score: str, threshold: float, temperature: float, steps: int, progress=None
) -> dict:
    """A point trained at one threshold (core.experiments.sweep.train_at_threshold) as a record of the sweep's
    measurements:
    the same fields (filter "detector", one seed, its drop share and filter quality), marked `single_point`, with the
    score and temperature it was trained at and the sweep settings it was measured under."""
    started = time.perf_counter()
    point, _ = train_at_threshold(run, splits, score, threshold, temperature, steps, progress)
    scores = run.scores_of(score)
    dropped = scores > threshold
    quality = filter_quality(scores, dropped, run.poison_mask, threshold)
    settings = run.sweep["config"] if run.sweep else asdict(SweepConfig())
    return {
        "single_point": True,
        "score": score,
        "temperature": temperature,
        "seed": 0,
        "filter": "detector",
        "target_share": float(dropped.float().mean()),
        "drop_share": float(dropped.float().mean()),
        "kept": point["kept"],
        "kept_digest": _digest(~dropped).hex(),
        **{key: quality[key] for key in ("threshold", "precision", "recall", "f1")},
        "dropped_poisoned": quality["dropped_poisoned"],
        "dropped_clean": quality["dropped_clean"],
        **{key: point[key] for key in METRICS},
        "steps": steps,
        "settings": {
            key: settings.get(key)
            for key in ("test_subset", "attack_test_subset", "robust_test_subset", "robust_steps")
        },
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "machine": machine(),
    }


def add_point(previous: dict | None, point: dict) -> dict:
    """points.json with `point` added; a point of the same score, threshold, temperature and steps replaces the
    older one (a rerun measures it again, it does not count twice)."""
    same = ("score", "threshold", "temperature", "steps")
    kept = [p for p in (previous or {}).get("points", []) if any(p.get(k) != point[k] for k in same)]
    return {"version": POINTS_VERSION, "points": [*kept, point]}


def student_test_subset(run: "Run", test, share: float = 1.0):
    """The stratified test subset the threshold sweep measured students' clean accuracy on (same seed)."""
    if share >= 1:
        return test
    _, index = stratified_split(test.labels, share, sampling_seed(run.config.seed, "sweep_test"))
    return test.subset(index)


def format_sweep(sweep: dict) -> str:
    """Mean +- std over seeds of each filter's students, one row per drop share; the attacks' standard errors."""
    curves = sweep["curves"]
    header = f"{'dropped':>8}" + "".join(f"{name + ' clean':>22}{name + ' worst':>22}" for name in curves)
    lines = [header]
    for row in zip(*curves.values()):
        cells = "".join(
            f"{p['mean']['clean_acc']:>15.1%} ±{p['std']['clean_acc']:>5.1%}"
            f"{p['mean']['adaptive_acc']:>15.1%} ±{p['std']['adaptive_acc']:>5.1%}"
            for p in row
        )
        lines.append(f"{row[0]['target_share']:>8.1%}{cells}")
    seeds = max(point["n_seeds"] for points in curves.values() for point in points)
    settings = sweep["config"]
    lines.append(f"{settings['steps']} optimiser steps per model; mean ± std over {seeds} seed(s)")
    lines.append(_sweep_errors(settings))
    timed = [m["seconds"] for m in sweep["measurements"] if "seconds" in m]
    if timed:
        lines.append(f"measured: {sum(timed) / len(timed):.0f} s per trained point (mean of {len(timed)})")
    return "\n".join(lines)


def _sweep_errors(settings: dict) -> str:
    """What one seed's point can resolve: the binomial standard error at 50% (the largest) of each measurement."""
    worst = standard_errors(dict.fromkeys(("clean_acc", "fgsm_acc", "ifgsm_acc", "adaptive_acc"), 0.5), settings)
    return (
        f"standard error of one seed's point at most: clean ±{worst['clean_acc']:.1%} ({settings['n_test']} images), "
        f"FGSM / I-FGSM ±{worst['fgsm_acc']:.1%} ({settings.get('n_attack_test', settings['n_test'])}), "
        f"worst case ±{worst['adaptive_acc']:.1%} ({settings['n_robust_test']})"
    )
