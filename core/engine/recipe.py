"""What determines an artifact beyond its config: the recipe version of its stage, where it was trained, and
the seed each role draws from the run's seed.

A cache key is the artifact's config plus `recipe_key(stage)`. Bump a stage's version whenever a code change
alters what that stage learns or produces (loop, schedule, loss, augmentation, quantiser, resize...): every
key of that stage changes, nothing stale is reused, and runs stored with the older version say so on load.

History (why each version is what it is):
  data 2        bilinear resize to 32x32 in core/engine/data.py; keys hold a digest of the pixels, not only counts
  poison 2      uint8 quantiser rounds toward the original pixel after snapping near-integers
  classifier 2  linear warm-up / decay (LambdaLR; v1 was torch's OneCycleLR); each epoch's last partial
                batch is skipped (a 3-image batch ruined batch-norm statistics: students lost 30-50 points)
  dae 2         the same loop as the classifiers (partial batches skipped)
  supervised_detector 2  NoiseResidualNet on the 3x3 high-pass residual, Adam, +-2 px translations
  classifier 3  the loop's recipe-3 knobs (warm-up share, label smoothing, EMA of the weights) and fractional epochs;
                the paper and quick presets use them (core.defences.distill.FAST_RECIPE, chosen with bench/training.py).
                The compare and sweep presets keep recipe 2's settings, which the same loop trains as before
  poison 3      attacks run in channels_last batches of 256 on a CPU (core.engine.train.eval_batch_size): the same
                attacks, 1.4-2.5x faster, with other float rounding
  dae 3         its defender's perturbed copies come from those attacks
"""

from __future__ import annotations

from core.engine.train import default_device

RECIPE_VERSIONS = {"data": 2, "poison": 3, "classifier": 3, "dae": 3, "supervised_detector": 2}


def recipe_key(stage: str) -> dict:
    """The recipe version of a stage, the device type and the autocast mode it trains with (bf16 on CUDA)."""
    device = default_device().type
    return {
        "stage": stage,
        "recipe": RECIPE_VERSIONS[stage],
        "device": device,
        "autocast": "bf16" if device == "cuda" else "none",
    }


def outdated_stages(stored: dict | None) -> list[str]:
    """Stages whose recipe version differs from the current one (all of them for a run that recorded none)."""
    stored = stored or {}
    return [stage for stage, version in RECIPE_VERSIONS.items() if stored.get(stage) != version]


# ---- one table of seeds per role -----------------------------------------------------------------
# Training seeds are run seed * 1000 + offset; sampling seeds (which images an evaluation uses, which
# samples a control drops) are run seed + offset. The values are those every shipped run was made with.

TRAINING_SEED_OFFSETS = {
    "surrogate": 1,
    "defender": 2,
    "dae": 3,
    "clean_reference": 4,
    "undefended": 5,
    "distillation_only": 6,
    "filter_only": 7,
    "filter_distillation": 8,
    "sweep": 9,
    "compare": 10,
}
SAMPLING_SEED_OFFSETS = {
    "train_trusted_split": 0,
    "calibration_split": 0,
    "test_subset": 1,
    "sweep_test": 7,
    "robust_test": 11,
    "random_filter": 13,
    "verify": 17,
    "attack_test": 19,
    "blind_validation": 23,
}


def training_seed(run_seed: int, role: str) -> int:
    """The seed a role's training draws (weights, batches, augmentation, dropout)."""
    return run_seed * 1000 + TRAINING_SEED_OFFSETS[role]


# A role repeated (the threshold sweep's 3 seeds) draws run seed + r * REPEAT_STRIDE for repeat r: repeat 0 is
# the role's own seed, and the stride keeps repeats of neighbouring run seeds apart.
REPEAT_STRIDE = 1_000_003


def repeat_seed(run_seed: int, repeat: int) -> int:
    """The run seed a role's repeat r draws its training and sampling seeds from (r = 0: the run seed itself)."""
    return run_seed + REPEAT_STRIDE * repeat


def sampling_seed(run_seed: int, role: str) -> int:
    """The seed a role's sample choice draws (data splits, evaluation subsets, the random filter)."""
    return run_seed + SAMPLING_SEED_OFFSETS[role]


# Within one training seed, a classifier trained on hard labels (a teacher among them) draws its initial weights from
# the seed itself and a student from the seed plus one, so a teacher and its student never share initial weights.
INIT_SEED_OFFSETS = {"classifier": 0, "student": 1}


def init_seed(training_seed: int, role: str) -> int:
    """The seed a model's initial weights draw, from its training seed ("classifier" or "student")."""
    return training_seed + INIT_SEED_OFFSETS[role]


# An Optuna worker's sampler: the study's seed, a prime stride per worker (workers of one study sample apart), and
# the trials already finished (a resumed study samples new points, not its first ones again).
OPTUNA_WORKER_STRIDE = 7919


def sampler_seed(study_seed: int, worker: int, finished_trials: int) -> int:
    return study_seed + OPTUNA_WORKER_STRIDE * worker + finished_trials
