"""The app's cached plain-data accessors: the run, its models, splits, scores, curves and example images, the shipped
studies, previews and an uploaded image's analysis. The one place that holds tensors and models: pages get pixels
(numpy), numbers, tables and text (tests/test_layout.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from core.detectors.dae import DAEConfig
from core.detectors.detect import PAPER_INITIAL_THRESHOLD
from core.engine.data import cache_dir, default_root, load_gtsrb, load_splits
from core.engine.models import Classifier, ClassifierConfig, DenoisingAutoencoder
from core.engine.storage import PROJECT_ROOT, load_weights
from core.experiments.budget import SHIPPED_BUDGET, load_budget
from core.experiments.compare import SHIPPED_COMPARISON, load_comparison
from core.experiments.defence_grid import SHIPPED_DEFENCE_GRIDS, load_shipped_grids
from core.experiments.live import experiment_seconds, point_seconds
from core.experiments.pipeline import ExperimentConfig
from core.experiments.run import SHIPPED_RUN, Run
from core.experiments.sweep import SweepConfig
from core.reporting import explore
from core.reporting.images import error_colour_bar, image_verdicts, read_upload, reconstruction_view, top_classes
from core.reporting.report import DEFENCE_COST_FILE
from core.threats.poison import PoisonConfig, poison_training_set

# every CPU core for the app's own computing (a background job sets its own threads)
torch.set_num_threads(max(1, os.cpu_count() or 1))


def run_dir() -> str:
    """The run the pages show: the session's choice (a link's ?run=), else $DAE_DISTILL_RUN, else the demo run."""
    return st.session_state.setdefault("run_dir", os.environ.get("DAE_DISTILL_RUN", str(SHIPPED_RUN)))


def app_dir() -> Path:
    """Everything the app writes (its runs, their model cache, its jobs, the Optuna study) lives here:
    $DAE_DISTILL_APP_DIR, else the data cache's folder $DAE_DISTILL_CACHE (default ~/.cache/dae-distill) / app; never
    the working directory."""
    return Path(os.environ.get("DAE_DISTILL_APP_DIR") or cache_dir() / "app")


def shown(path) -> str:
    """A path as the pages print it: relative to the project (checkpoints/paper, ../shared/data), or to the app's own
    folder (app/runs/quick-ifgsm-eps0.01-seed0-1a2b3c), not the machine's absolute path; absolute only when it is on
    another drive."""
    try:
        return "app/" + Path(path).resolve().relative_to(app_dir().resolve()).as_posix()
    except ValueError:
        pass
    try:
        return os.path.relpath(Path(path).resolve(), PROJECT_ROOT)
    except ValueError:
        return str(path)


def data_root() -> str:
    return str(default_root())


def cached_run(directory: str) -> Run:
    """The run, reloaded when one of its JSON files changed (a sweep or detectors added while the app runs)."""
    stamp = tuple((path.name, path.stat().st_mtime_ns) for path in sorted(Path(directory).glob("*.json")))
    return _loaded_run(directory, stamp)


@st.cache_resource(max_entries=4, show_spinner="Loading the run...")
def _loaded_run(directory: str, stamp: tuple) -> Run:
    return Run.load(directory)


@st.cache_resource(max_entries=16, show_spinner="Loading a model...")
def cached_classifier(directory: str, role: str) -> torch.nn.Module:
    return cached_run(directory).classifier(role)


@st.cache_resource(max_entries=4, show_spinner="Loading the autoencoder...")
def cached_autoencoder(directory: str) -> torch.nn.Module:
    return cached_run(directory).autoencoder()


@st.cache_resource(max_entries=4, show_spinner=False)
def cached_supervised_detector(directory: str):
    return cached_run(directory).supervised_detector()


@st.cache_resource(max_entries=2, show_spinner="Loading GTSRB...")
def cached_splits(root: str, trusted_fraction: float, seed: int, train_subset: float, test_subset: float):
    return load_splits(root, trusted_fraction, seed, train_subset, test_subset)


@st.cache_data(max_entries=2, show_spinner="Reading GTSRB...")
def dataset_counts(root: str) -> tuple[int, int]:
    return len(load_gtsrb("train", root)), len(load_gtsrb("test", root))


def run_splits(run: Run):
    c = run.config
    return cached_splits(data_root(), c.trusted_fraction, c.seed, c.train_subset, c.test_subset)


@st.cache_data(max_entries=4, show_spinner="Timing a training step and the attacks on this device...")
def point_seconds_here(
    width: int, hidden: int, batch_size: int, steps: int, images: tuple, attack_steps: int, robust_steps: int
) -> float:
    """Estimated seconds of one threshold point on this device (core.experiments.live.point_seconds); images: (name,
    count)."""
    return point_seconds(
        lambda: Classifier(ClassifierConfig(width=width, hidden=hidden)),
        batch_size,
        steps,
        dict(images),
        attack_steps,
        robust_steps,
    )


@st.cache_data(max_entries=8, show_spinner="Timing this machine for the estimate (a few seconds)...")
def experiment_seconds_here(config: ExperimentConfig, threads: int, shares: tuple[float, ...], points: int) -> dict:
    """core.experiments.live.experiment_seconds of an experiment and its one-seed threshold curve (`points` points at
    sweep settings over `shares`) on this machine, timed with the job's thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return experiment_seconds(
            config, dataset_counts(data_root()), SweepConfig(drop_shares=shares, seeds=(0,)), points
        )
    finally:
        torch.set_num_threads(previous)


def file_stamp(path: str) -> int | None:
    """The file's modification time: a cache key that reloads a grid or curve file its command is still writing."""
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return None


def cached_defence_grid() -> dict | None:
    """The threat x defence grid: the shipped grids as one (core.experiments.defence_grid.merge_grids) unless
    session_state["defence_grid_path"] names another file; None when there is none."""
    paths = (st.session_state["defence_grid_path"],) if "defence_grid_path" in st.session_state else None
    paths = tuple(str(path) for path in (paths or SHIPPED_DEFENCE_GRIDS))
    return _defence_grid(paths, tuple(file_stamp(path) for path in paths))


def cached_defence_costs() -> dict | None:
    """bench/defence_cost.py's shipped result (each defence's cost in plain trainings), None when not measured."""
    path = PROJECT_ROOT / DEFENCE_COST_FILE
    return _json_file(str(path), file_stamp(str(path)))


@st.cache_data(max_entries=4)
def _json_file(path: str, stamp) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@st.cache_data(max_entries=4, show_spinner="Reading the shipped studies...")
def _defence_grid(paths: tuple[str, ...], stamps: tuple) -> dict | None:
    return load_shipped_grids(paths)


def cached_budget() -> dict | None:
    """The budget curves (shipped unless session_state["budget_path"] names others), or None when there are none."""
    path = st.session_state.get("budget_path", str(SHIPPED_BUDGET))
    return _budget(path, file_stamp(path))


@st.cache_data(max_entries=4, show_spinner="Reading the shipped studies...")
def _budget(path: str, stamp: int | None) -> dict | None:
    return load_budget(path)


def cached_comparison(path: str = str(SHIPPED_COMPARISON)) -> dict:
    """A comparison file (compare.json), reloaded when its command rewrites it (it does after every cell)."""
    return _comparison(path, file_stamp(path))


@st.cache_data(max_entries=4, show_spinner="Reading the shipped studies...")
def _comparison(path: str, stamp: int | None) -> dict:
    return load_comparison(path)


@st.cache_data(max_entries=16, show_spinner="Reading the run's poison scores...")
def cached_scores(directory: str, score: str = "dae") -> tuple[np.ndarray, np.ndarray]:
    """A detector's training-set scores ('dae': reconstruction error) and the ground-truth mask."""
    run = cached_run(directory)
    return run.scores_of(score).numpy().astype(np.float64), run.poison_mask.numpy().astype(bool)


@st.cache_data(max_entries=16, show_spinner="Binning the scores...")
def score_histogram(directory: str, score: str, bins: int = 80) -> dict:
    """Clean and poisoned counts of a score in `bins` bins from its minimum to its 99.9th percentile."""
    scores, mask = cached_scores(directory, score)
    top = float(np.quantile(scores, 0.999))
    edges = np.linspace(float(scores.min()), top, bins + 1)
    return {
        "edges": edges,
        "clean": np.histogram(scores[~mask], edges)[0],
        "poisoned": np.histogram(scores[mask], edges)[0],
    }


def slider_range(directory: str, score: str) -> tuple[float, float]:
    """The Threshold slider's range for a score: its minimum to its 99.9th percentile, widened to the paper's initial
    0.015 for the DAE (else to the run's own threshold)."""
    scores, _ = cached_scores(directory, score)
    run = cached_run(directory)
    reach = PAPER_INITIAL_THRESHOLD if score == "dae" else run.threshold_of(score)
    return float(scores.min()), float(max(np.quantile(scores, 0.999), reach))


@st.cache_data(max_entries=16, show_spinner="Computing the ROC and precision-recall curves...")
def cached_curves(directory: str, score: str = "dae") -> dict:
    scores, mask = cached_scores(directory, score)
    return explore.curves(scores, mask)


@st.cache_resource(max_entries=2, show_spinner="Loading the example images...")
def cached_example_pool(directory: str, pool_size: int = 48) -> dict:
    """A fixed, seeded pool of poisoned and clean training images for the sample grids: "index", "is_poisoned", and
    "clean" / "delivered" as (N, H, W, 3) uint8 pixels."""
    run = cached_run(directory)
    pool = explore.example_pool(run, run_splits(run).train, pool_size)
    return {
        "index": pool["index"],
        "is_poisoned": pool["is_poisoned"],
        "labels": pool["labels"].numpy(),
        "clean": pool["clean"].permute(0, 2, 3, 1).numpy(),
        "delivered": pool["delivered"].permute(0, 2, 3, 1).numpy(),
    }


def as_images(pixels: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 pixels -> the engine's (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)


def purify_preview(directory: str, sigma: float, count: int = 8) -> dict:
    """The first `count` delivered images of the example pool through the run's DAE purifier at noise sigma:
    "images", "purified" and "amplified" (the change around grey) as HWC uint8 pixels, and the mean change in grey
    levels."""
    shown = explore.purify_preview(
        cached_autoencoder(directory), as_images(cached_example_pool(directory)["delivered"][:count]), sigma
    )
    return {
        "images": [explore.as_pixels(image) for image in shown["images"]],
        "purified": [explore.as_pixels(image) for image in shown["purified"]],
        "amplified": [explore.as_pixels(image) for image in shown["amplified"]],
        "mean_change_levels": shown["mean_change_levels"],
    }


def uploaded_image(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes as the models see it: 32x32 HWC uint8 pixels (core.reporting.images.read_upload: an
    UploadError says what was wrong with the file)."""
    return explore.as_pixels(read_upload(data, name))


def test_image(directory: str, index: int) -> tuple[np.ndarray, int] | None:
    """GTSRB test image `index` of the run's test split as HWC uint8 pixels and its label (None past the end)."""
    test = run_splits(cached_run(directory)).test
    return (explore.as_pixels(test.images[index]), int(test.labels[index])) if 0 <= index < len(test) else None


def image_models(directory: str) -> dict:
    """The models Your images reads (loading them says which file failed): student, undefended, DAE, and the
    noise-residual detector's model where the run ships one."""
    return {
        "student": cached_classifier(directory, "filter_distillation"),
        "undefended": cached_classifier(directory, "undefended"),
        "autoencoder": cached_autoencoder(directory),
        "residual": cached_supervised_detector(directory),
    }


def image_analysis(directory: str, pixels: np.ndarray, threshold: float, attack: dict | None = None) -> list[dict]:
    """What Your images shows for one image: a row for the image as given and, when attack is set ({"name", "eps",
    "alpha", "steps", "target": "student" or "undefended"}), one for it attacked. Each row holds plain data: "image",
    "reconstruction" and "error_map" as HWC uint8 pixels, numbers, top-5 lists
    (core.reporting.images.image_verdicts)."""
    models, run = image_models(directory), cached_run(directory)
    images = [torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)]
    if attack is not None:
        settings = (attack["name"], attack["eps"], attack["alpha"], attack["steps"])
        images.append(explore.attack_images(models[attack["target"]], images[0].unsqueeze(0), *settings)[0])
    rows = []
    for x in images:
        view = image_verdicts(
            x, run, models["autoencoder"], models["student"], models["undefended"], models["residual"], threshold
        )
        view.update(
            image=explore.as_pixels(x),
            reconstruction=explore.as_pixels(view["reconstruction"]),
            error_map=explore.as_pixels(view["error_map"]),
        )
        rows.append(view)
    return rows


def test_set_size(directory: str) -> int:
    return len(run_splits(cached_run(directory)).test)


def teacher_probabilities(directory: str, index: int, temperature: float, k: int = 5) -> dict:
    """The run's teacher on GTSRB test image `index`: the image (HWC uint8 pixels), its label, and the top-k classes
    as (name, probability) at `temperature` and at 1."""
    teacher = cached_classifier(directory, "filter_distillation_teacher")
    test = run_splits(cached_run(directory)).test
    image = test.images[index : index + 1]
    return {
        "image": explore.as_pixels(image[0]),
        "label": int(test.labels[index]),
        "at_t": top_classes(teacher, image, k=k, temperature=temperature)[0],
        "at_1": top_classes(teacher, image, k=k, temperature=1.0)[0],
    }


def dae_folder(directory: str, flags: list[str]) -> Path:
    """Where the app keeps a DAE trained on a run's pairs with these flags (one folder per run and settings)."""
    digest = hashlib.sha256(repr((str(Path(directory).resolve()), flags)).encode()).hexdigest()[:10]
    return app_dir() / "daes" / digest


def trained_daes(directory: str) -> list[dict]:
    """The DAEs trained on this run's pairs by the Autoencoder page's jobs: dae.json's config and metrics, and the
    folder, newest first."""
    found = []
    for path in sorted((app_dir() / "daes").glob("*/dae.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if entry.get("metrics", {}).get("run_dir") == str(directory) and (path.parent / "dae.safetensors").exists():
            found.append({**entry, "folder": str(path.parent)})
    return found


@st.cache_resource(max_entries=4, show_spinner="Loading the autoencoder...")
def _trained_dae(folder: str, stamp: int | None):
    config = DAEConfig.from_dict(json.loads((Path(folder) / "dae.json").read_text())["config"])
    return load_weights(folder, "dae", DenoisingAutoencoder(config.model)).eval()


def dae_gallery(directory: str, trained_folder: str | None = None, count: int = 8) -> dict:
    """A DAE trained here (its folder, when it is one of this run's), else the run's, on the first `count` delivered
    images of the example pool: "trained_here", "input" / "reconstruction" / "error_map" as lists of HWC uint8
    pixels, "mse" per image, "error_scale", "is_poisoned"."""
    trained_here = trained_folder in {entry["folder"] for entry in trained_daes(directory)}
    stamp = file_stamp(str(Path(trained_folder) / "dae.safetensors")) if trained_here else None
    autoencoder = _trained_dae(trained_folder, stamp) if trained_here else cached_autoencoder(directory)
    pool = cached_example_pool(directory)
    view = reconstruction_view(autoencoder, as_images(pool["delivered"][:count]))
    return {
        "trained_here": trained_here,
        **{
            name: [explore.as_pixels(image) for image in view[name]]
            for name in ("input", "reconstruction", "error_map")
        },
        "mse": view["mse"].tolist(),
        "error_scale": view["error_scale"],
        "is_poisoned": pool["is_poisoned"][:count].tolist(),
        "colour_bar": explore.as_pixels(error_colour_bar()),  # the maps' scale, low error on the left
    }


def threat_preview(directory: str, config: PoisonConfig) -> dict:
    """A threat that needs no surrogate applied to the run's train split (milliseconds): counts, and a seeded few
    poisons as HWC uint8 "images" with their "old_labels" and "new_labels"."""
    preview = explore.threat_preview(run_splits(cached_run(directory)).train, config)
    return {**preview, "images": [explore.as_pixels(image) for image in preview["images"]]}


def load_surrogate(directory: str) -> None:
    """Load the run's surrogate (the attacker's model) and its GTSRB splits now, so that a damaged file or a missing
    dataset is reported once, before the preview."""
    cached_classifier(directory, "surrogate")
    run_splits(cached_run(directory))


@st.cache_data(max_entries=16, show_spinner="Crafting preview poisons (TAP and unlearnable: a few seconds)...")
def poison_preview(directory: str, classes: tuple, per_class: int, config: PoisonConfig) -> dict:
    """A few training images of the chosen classes poisoned with config (core.reporting.explore.poison_preview):
    "clean",
    "poisoned" and "amplified" as lists of HWC uint8 pixels, "labels", "stats", the surrogate's accuracy before and
    after."""
    run = cached_run(directory)
    shown = explore.poison_preview(
        run_splits(run).train, cached_classifier(directory, "surrogate"), list(classes), per_class, config
    )
    return {
        **shown,
        **{name: [explore.as_pixels(image) for image in shown[name]] for name in ("clean", "poisoned", "amplified")},
        "labels": shown["labels"].tolist(),
    }


@st.cache_resource(max_entries=3, show_spinner=False)
def _applied_poison(directory: str, config: PoisonConfig):
    run = cached_run(directory)
    bar = st.progress(0.0, text="Crafting poisons")
    result = poison_training_set(
        run_splits(run).train,
        cached_classifier(directory, "surrogate"),
        config,
        progress=lambda stage, done, total: bar.progress(done / max(total, 1), text=f"{stage} {done}/{total}"),
    )
    bar.empty()
    return result


def applied_poison_summary(directory: str, config: PoisonConfig) -> dict:
    """Poison the run's whole train split with config (crafted once per config, with a bar) and say what changed
    (core.reporting.explore.applied_summary: counts and the perturbation's size)."""
    return explore.applied_summary(run_splits(cached_run(directory)).train, _applied_poison(directory, config))
