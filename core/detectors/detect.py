"""Poison detectors in alibi-detect's shape: fit / score / infer_threshold / predict.

`DAEDetector` subclasses alibi-detect's PyTorch outlier-detector base, so its threshold and p-values
follow alibi-detect's own semantics: `infer_threshold(x, fpr)` sets the threshold to the
(1 - fpr)-quantile of the scores of x (interpolation 'higher'), and a sample is an outlier when its
score is strictly above the threshold. Other scores plug in by subclassing `ScoreDetector`:

  dae          the paper's: DAE reconstruction error
  magnet       MagNet (Meng & Chen 2017): Jensen-Shannon divergence between the defender's classifier
               on x and on DAE(x), at temperature T
  mahalanobis_latent / mahalanobis_features / knn_latent / knn_features
               alibi-detect's own Mahalanobis and KNN detectors on DAE latent codes or on the
               defender classifier's penultimate features, fitted on trusted clean images
  supervised   a binary classifier trained on the trusted set against the defender's own perturbed
               copies (the same copies the DAE learns to denoise)

Every detector sees only what the defender has: the trusted set, its own classifier and DAE, and the
(poisoned) training images. Never the attacker's surrogate or the poison mask.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

with warnings.catch_warnings():  # alibi-detect still decorates with the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from alibi_detect.od._knn import KNN
    from alibi_detect.od._mahalanobis import Mahalanobis
    from alibi_detect.od.pytorch.base import TorchOutlierDetector, TorchOutlierDetectorOutput

from core.detectors.dae import denoising_pairs
from core.engine.models import Classifier
from core.engine.recipe import recipe_key
from core.engine.registry import DETECTORS, DetectorSpec, Knob, knob_value
from core.engine.train import TrainConfig, default_device, hard_label_loss, predict, to_float_images, train

if TYPE_CHECKING:
    from core.detectors.dae import DAEConfig
    from core.engine.data import ImageSet

# Controls are not detectors: they decide without a score (core.experiments.compare); their labels sit beside the
# detectors'.
CONTROLS = ("none", "random", "oracle")
CONTROL_LABELS = {
    "none": "no filter (control)",
    "random": "random filter (control)",
    "oracle": "oracle filter (control)",
}


def filter_label(name: str) -> str:
    """A detector's or control's label for tables and selectors."""
    return CONTROL_LABELS.get(name) or DETECTORS.label(name)


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


class MagNetDetector(ScoreDetector):
    """Score = JSD(softmax(f(x) / T), softmax(f(DAE(x)) / T)) for the defender's classifier f."""

    def __init__(
        self,
        autoencoder: nn.Module,
        classifier: nn.Module,
        temperature: float = 10.0,
        batch_size: int = 1024,
        device=None,
    ):
        super().__init__(device=device)
        if not temperature > 0:
            raise ValueError(f"MagNet temperature must be > 0, got {temperature}")
        self.autoencoder, self.classifier = autoencoder.eval(), classifier.eval()
        self.temperature, self.batch_size = temperature, batch_size

    def score(self, x: torch.Tensor) -> torch.Tensor:
        scores = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = to_float_images(x[start : start + self.batch_size].cpu())
            reconstruction = predict(self.autoencoder, chunk)
            p = torch.softmax(predict(self.classifier, chunk) / self.temperature, dim=1)
            q = torch.softmax(predict(self.classifier, reconstruction) / self.temperature, dim=1)
            scores.append(jensen_shannon(p, q))
        return torch.cat(scores) if scores else torch.empty(0)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Row-wise JSD (natural log) between probability vectors; 0 for equal rows, at most log 2."""
    middle = (p + q) / 2

    def kl(a, b):  # 0 * log 0 = 0
        return torch.where(a > 0, a * (a.clamp_min(1e-30).log() - b.clamp_min(1e-30).log()), torch.zeros_like(a)).sum(
            dim=1
        )

    return 0.5 * kl(p, middle) + 0.5 * kl(q, middle)


class FeatureDetector(ScoreDetector):
    """alibi-detect's Mahalanobis or KNN detector, run on features(x) instead of pixels.

    fit(x_ref) fits the alibi-detect detector on the reference features (trusted clean images);
    score is its score (Mahalanobis distance, or mean distance to the k nearest reference points).
    """

    def __init__(self, kind: str, features, k: int = 10, device=None):
        super().__init__(device=device)
        if kind not in ("mahalanobis", "knn"):
            raise ValueError(f"feature detector kind must be 'mahalanobis' or 'knn', got {kind!r}")
        self.kind, self.features = kind, features
        # normalizer=None: raw KNN distances (alibi-detect's p-value normaliser only matters for ensembles)
        self.inner = Mahalanobis(device="cpu") if kind == "mahalanobis" else KNN(k=k, normalizer=None, device="cpu")
        self.kept_features: torch.Tensor | None = None  # Mahalanobis: the features that vary on the reference

    def _features(self, x: torch.Tensor):
        features = self.features(x).float()  # the feature functions batch through predict()
        return (features if self.kept_features is None else features[:, self.kept_features]).numpy()

    def fit(self, x_ref: torch.Tensor) -> "FeatureDetector":
        if self.kind == "mahalanobis":
            # A feature constant on the reference (a ReLU unit dead on every trusted image: 124 of the paper run's
            # 256 penultimate features under classifier recipe 3) makes the covariance singular and its eigh fail.
            # It says nothing about the reference's spread, so the distance is taken over the others.
            self.kept_features = self.features(x_ref).float().std(dim=0) > 0
        self.inner.fit(self._features(x_ref))
        return super().fit(x_ref)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.inner.score(self._features(x))).float()


def latent_features(autoencoder: nn.Module):
    """DAE latent codes h = f_e(x)."""
    encoder = autoencoder.encoder.eval()
    return lambda x: predict(encoder, x)


def classifier_features(classifier: Classifier):
    """The classifier's penultimate features."""

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = classifier

        def forward(self, x):
            return self.classifier.embed(x)

    embed = Embed().eval()
    return lambda x: predict(embed, x)


@dataclass(frozen=True)
class SupervisedConfig:
    """The binary clean-vs-perturbed classifier. Its positives are the DAE's own training inputs: the
    defender's FGSM / I-FGSM copies of the trusted images (core.detectors.dae.denoising_pairs)."""

    width: int = 32
    epochs: int = 20
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if self.width < 1 or self.epochs < 1 or not self.learning_rate > 0:
            raise ValueError("supervised detector needs width >= 1, epochs >= 1, learning_rate > 0")


class NoiseResidualNet(nn.Module):
    """A small CNN on the image's high-pass residual x - mean3x3(x), in grey levels.

    Perturbation poisons add +-2 grey levels to most pixels: invisible next to the image content (and
    to a DAE's reconstruction error) but plain in the residual once the content is subtracted, as in
    steganalysis. A classifier on raw pixels (our VGG-style one) never learned it here.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, width, width, width, 2 * width]
        for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, stride=1 if index < 2 else 2),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = x * 255.0
        local_mean = nn.functional.avg_pool2d(nn.functional.pad(levels, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return self.head(self.features(levels - local_mean))


def train_supervised_detector(
    clean: torch.Tensor, perturbed: torch.Tensor, config: SupervisedConfig, progress=None, should_stop=None
) -> NoiseResidualNet:
    """A 2-class classifier: 0 = clean trusted image, 1 = the defender's perturbed copy of one."""
    torch.manual_seed(config.seed)
    model = NoiseResidualNet(config.width)
    copies = max(1, perturbed.shape[0] // max(clean.shape[0], 1))  # balance the classes
    images = torch.cat([clean.repeat(copies, 1, 1, 1), perturbed])
    labels = torch.cat(
        [
            torch.zeros(images.shape[0] - perturbed.shape[0], dtype=torch.long),
            torch.ones(perturbed.shape[0], dtype=torch.long),
        ]
    )
    train_config = TrainConfig(
        epochs=config.epochs, learning_rate=config.learning_rate, optimizer="adam", augment=True, seed=config.seed
    )
    train(model, images, labels, hard_label_loss(), train_config, progress=progress, should_stop=should_stop)
    return model.eval()


class SupervisedDetector(ScoreDetector):
    """Score = logit(perturbed) - logit(clean) of the supervised binary classifier."""

    def __init__(self, model: nn.Module, device=None):
        super().__init__(device=device)
        self.model = model.eval()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        logits = predict(self.model, x)
        return (logits[:, 1] - logits[:, 0]) if logits.numel() else torch.empty(0)


def reconstruction_error(autoencoder: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Per-image MSE between images (uint8 or [0, 1] floats) and their reconstructions, on the CPU."""
    errors = []
    for start in range(0, images.shape[0], batch_size):
        chunk = to_float_images(images[start : start + batch_size].cpu())
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


def set_detector_threshold(
    detector: ScoreDetector, config: ThresholdConfig, calibration: torch.Tensor, train_images: torch.Tensor
) -> float:
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


# ---- the detector registry ----------------------------------------------------------------------

# The built-in detectors' own parameters (each in its entry's spec below). MagNet's temperature and KNN's k were fields
# of the comparison's config before knobs existed: stored names keep every shipped file's settings. The supervised
# detector's three are written as the SupervisedConfig its files and cache key have always held ("supervised": {...}).
MAGNET_TEMPERATURE = Knob(
    "temperature", 10.0, "softmax temperature of the JSD (MagNet's 10)", 0.01, 1000, stored_as="magnet_temperature"
)
KNN_K = Knob(
    "k",
    10,
    "neighbours whose mean distance is the score (knn_latent's knob; knn_features reads it)",
    1,
    1000,
    stored_as="knn_k",
)
SUPERVISED_WIDTH = Knob("width", SupervisedConfig.width, "channels of the noise-residual CNN", 1, 512)
SUPERVISED_EPOCHS = Knob(
    "epochs", SupervisedConfig.epochs, "passes over the defender's clean and perturbed copies", 1, 1000
)
SUPERVISED_LEARNING_RATE = Knob("learning_rate", SupervisedConfig.learning_rate, "Adam's learning rate", 1e-6, 1.0)


def supervised_config(knobs: tuple) -> SupervisedConfig:
    """The supervised detector's settings from its knobs, in the form its files and cache key hold."""
    spec = DETECTORS["supervised"]
    return SupervisedConfig(**{knob.name: knob_value(knobs, spec, knob.name) for knob in spec.knobs})


@dataclass
class DetectorContext:
    """What the defender has when building a detector: never the attacker's surrogate or the poison mask."""

    autoencoder: nn.Module  # the defender's DAE
    defender: nn.Module  # the defender's classifier, trained on the trusted images
    dae_data: "ImageSet"  # trusted images the DAE and the defender trained on
    dae_config: "DAEConfig"  # how the defender's own perturbed copies were made
    defender_name: str  # the defender's cache name (keys the supervised detector)
    cache: object | None = None  # a core.experiments.pipeline.ModelCache for trained detectors; None trains afresh
    report: object | None = None  # progress(stage, done, total)
    # () -> the classifier trained on the poisoned training set (trained or loaded on first call): for the
    # detectors fitted on the training set itself (core/detectors/training_set.py)
    poisoned_model: object | None = None
    knobs: tuple = ()  # the detectors' own parameters (DetectorSpec.knobs): "detector.knob" -> value

    def knob(self, detector: str, name: str):
        """The value of the detector's knob `name` (its spec's default unless set)."""
        return knob_value(self.knobs, DETECTORS[detector], name)

    @property
    def supervised(self) -> SupervisedConfig:
        return supervised_config(self.knobs)


def supervised_model(context: DetectorContext) -> nn.Module:
    """The noise-residual classifier of the context's defender, cached by everything that determines it."""

    def fit():
        inputs, _ = denoising_pairs(context.dae_data, context.defender, context.dae_config)
        n = len(context.dae_data)
        report = context.report
        progress = (
            (lambda event: report("training supervised detector", event.step, event.total_steps)) if report else None
        )
        return train_supervised_detector(inputs[:n], inputs[n:], context.supervised, progress)

    if context.cache is None:
        return fit()
    key = {
        "defender": context.defender_name,
        "dae_attacks": context.dae_config.to_dict(),
        "supervised": asdict(context.supervised),
        "architecture": NoiseResidualNet.__name__,
        **recipe_key("supervised_detector"),
    }
    model, _ = context.cache.get("supervised_detector", key, lambda: NoiseResidualNet(context.supervised.width), fit)
    return model


def _feature_detector(kind: str, space: str):
    def build(context: DetectorContext) -> FeatureDetector:
        features = latent_features(context.autoencoder) if space == "latent" else classifier_features(context.defender)
        return FeatureDetector(kind, features, k=context.knob("knn_latent", "k"))

    return build


DETECTORS.register(
    DetectorSpec("dae", "DAE reconstruction error (the paper's)", lambda context: DAEDetector(context.autoencoder))
)
DETECTORS.register(
    DetectorSpec(
        "magnet",
        "MagNet: JSD of classifier on x vs DAE(x)",
        lambda context: MagNetDetector(context.autoencoder, context.defender, context.knob("magnet", "temperature")),
        knobs=(MAGNET_TEMPERATURE,),
    )
)
for _kind, _kind_label in (("mahalanobis", "Mahalanobis"), ("knn", "KNN")):
    for _space, _space_label in (("latent", "DAE latents"), ("features", "classifier features")):
        DETECTORS.register(
            DetectorSpec(
                f"{_kind}_{_space}",
                f"{_kind_label} on {_space_label} (alibi-detect)",
                _feature_detector(_kind, _space),
                fit_on="trusted",
                knobs=(KNN_K,) if (_kind, _space) == ("knn", "latent") else (),
            )
        )
DETECTORS.register(
    DetectorSpec(
        "supervised",
        "Supervised noise-residual CNN",
        lambda context: SupervisedDetector(supervised_model(context)),
        knobs=(SUPERVISED_WIDTH, SUPERVISED_EPOCHS, SUPERVISED_LEARNING_RATE),
    )
)
