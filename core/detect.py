"""Poison detectors in alibi-detect's shape: fit / score / infer_threshold / predict.

`DAEDetector` subclasses alibi-detect's PyTorch outlier-detector base, so its threshold and p-values
follow alibi-detect's own semantics: `infer_threshold(x, fpr)` sets the threshold to the
(1 - fpr)-quantile of the scores of x (interpolation 'higher'), and a sample is an outlier when its
score is strictly above the threshold. Other scores plug in by subclassing `ScoreDetector`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import warnings

import torch
from torch import nn

with warnings.catch_warnings():  # alibi-detect still decorates with the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from alibi_detect.od.pytorch.base import TorchOutlierDetector, TorchOutlierDetectorOutput

from core.train import default_device, predict, to_float_images

THRESHOLD_MODES = ("fixed", "fpr", "expected_poison")
PAPER_INITIAL_THRESHOLD = 0.015
PAPER_INFERRED_THRESHOLD = 0.003


class ScoreDetector(TorchOutlierDetector):
    """Base for our detectors: subclasses define `score`; higher means more likely poisoned."""

    ensemble = False

    def __init__(self, device=None):
        # alibi-detect prints a line when it guesses the device; we always name it
        super().__init__(device=device if device is not None else default_device())

    def fit(self, x_ref: torch.Tensor) -> "ScoreDetector":
        """Record the scores of reference (trusted, clean) data; the scoring model is trained beforehand."""
        self.reference_scores = self.score(x_ref)
        return self._set_fitted()

    def set_threshold(self, threshold: float) -> None:
        """A fixed threshold (the paper's initial 0.015); p-values are then taken against the fit data."""
        self.check_fitted()
        self.val_scores = self.reference_scores
        self.threshold = torch.tensor(float(threshold))
        self.threshold_inferred = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.score(x)
        self.check_threshold_inferred()
        return scores > self.threshold

    def predict_dict(self, x: torch.Tensor) -> dict:
        """predict() in alibi-detect's front-end format: numpy arrays and floats."""
        output: TorchOutlierDetectorOutput = self.predict(x)
        return output.to_frontend_dtype()


class DAEDetector(ScoreDetector):
    """Score = per-image mean squared error between the input and the DAE's reconstruction."""

    def __init__(self, autoencoder: nn.Module, batch_size: int = 1024, device=None):
        super().__init__(device=device)
        self.autoencoder = autoencoder.to(self.device).eval()
        self.batch_size = batch_size

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(self.autoencoder, x, self.batch_size)


def reconstruction_error(autoencoder: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Per-image MSE between images (uint8 or [0, 1] floats) and their reconstructions, on the CPU."""
    errors = []
    for start in range(0, images.shape[0], batch_size):
        chunk = to_float_images(images[start: start + batch_size].cpu())
        reconstruction = predict(autoencoder, chunk, batch_size)
        errors.append(((reconstruction - chunk) ** 2).flatten(1).mean(dim=1))
    return torch.cat(errors) if errors else torch.empty(0)


@dataclass(frozen=True)
class ThresholdConfig:
    """How the reconstruction threshold is set.

    fixed: `value` as is (the paper starts from 0.015).
    fpr: alibi-detect's infer_threshold on held-out trusted clean images at false-positive rate `fpr`.
    expected_poison: infer_threshold on the training set itself with fpr = `expected_poison`, i.e. drop
      that share of it (the paper's "percentage of instances identified as adversarial").
    """

    mode: str = "expected_poison"
    value: float = PAPER_INITIAL_THRESHOLD
    fpr: float = 0.05
    expected_poison: float = 0.1

    def __post_init__(self):
        if self.mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold mode must be one of {', '.join(THRESHOLD_MODES)}, got {self.mode!r}")
        if not self.value >= 0:
            raise ValueError(f"threshold must be >= 0, got {self.value}")
        if not 0 < self.fpr < 1:
            raise ValueError(f"fpr must be in (0, 1), got {self.fpr}")
        if not 0 < self.expected_poison < 1:
            raise ValueError(f"expected poison fraction must be in (0, 1), got {self.expected_poison}")

    def to_dict(self) -> dict:
        return asdict(self)


def set_detector_threshold(detector: ScoreDetector, config: ThresholdConfig,
                           calibration: torch.Tensor, train_images: torch.Tensor) -> float:
    """Apply config to a fitted detector; returns the threshold as a float."""
    if config.mode == "fixed":
        detector.set_threshold(config.value)
    elif config.mode == "fpr":
        detector.infer_threshold(calibration, config.fpr)
    else:
        detector.infer_threshold(train_images, config.expected_poison)
    return float(detector.threshold)


class PrecomputedScores(ScoreDetector):
    """A detector whose 'data' are already scores: lets alibi-detect's own infer_threshold run on
    stored reconstruction errors (the app's threshold buttons) without re-running the DAE."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32).flatten()


def infer_threshold_from_scores(scores, fpr: float) -> float:
    """alibi-detect's infer_threshold(scores, fpr) on precomputed scores: the (1 - fpr) 'higher' quantile."""
    detector = PrecomputedScores()
    scores = torch.as_tensor(scores, dtype=torch.float32)
    detector.fit(scores)
    detector.infer_threshold(scores, fpr)
    return float(detector.threshold)


# ---- controls: what any poison filter must be compared with -------------------------------------

def random_drop_mask(n: int, n_drop: int, seed: int) -> torch.Tensor:
    """Drop exactly n_drop of n samples uniformly at random (the 'no better than chance' control)."""
    if not 0 <= n_drop <= n:
        raise ValueError(f"n_drop must be in [0, {n}], got {n_drop}")
    dropped = torch.zeros(n, dtype=torch.bool)
    dropped[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_drop]] = True
    return dropped


def oracle_drop_mask(poison_mask: torch.Tensor) -> torch.Tensor:
    """Drop exactly the poisoned samples (the 'perfect detector' control; uses the ground truth by design)."""
    return poison_mask.bool().clone()
