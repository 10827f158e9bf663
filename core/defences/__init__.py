"""Training-time defences: what the defender does to the (poisoned) training set before its classifier trains.

Each entry of core.engine.registry.DEFENCES turns the training set into the one the classifier learns from (filter,
purify, JPEG, grayscale) or changes how it learns (adversarial training). Anchors, CIFAR-10 / ResNet-18 at eps 8/255:
JPEG quality 10 restores TAP to 83.9% and error-minimising noise to 81.5%; grayscale restores error-minimising
noise (93.0%) but not TAP (9.1%) (Liu et al. 2023, image shortcut squeezing). Purification adds noise larger than
eps and reconstructs with a denoiser trained on a small clean set (D-VAE 2024, ECLIPSE 2024): here the paper's DAE.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import rgb_to_grayscale

from core.attacks import pgd
from core.engine.data import ImageSet
from core.engine.models import AutoencoderConfig, DenoisingAutoencoder
from core.engine.registry import DEFENCES, DETECTORS, DefenceSpec, Knob, checked_knobs, knob_value, stored_knobs
from core.engine.train import TrainConfig, predict, reconstruction_loss, to_float_images
from core.engine.train import train as train_model

# The built-in defences' own parameters (each in its entry's spec below). Stored names: they were this module's config
# fields before knobs existed, and every shipped grid file and model key holds them under those names.
SIGMA = Knob(
    "sigma",
    0.1,
    "std of the noise added before the DAE ([0, 1] pixel scale; 0: plain reconstruction)",
    0,
    1,
    stored_as="sigma",
)
JPEG_QUALITY = Knob("quality", 10, "PIL quality 1..95 (the anchor's 10)", 1, 95, stored_as="jpeg_quality")
ADVERSARIAL_EPS = Knob("eps", 8 / 255, "L-inf radius of the PGD examples trained on", 0, 1, stored_as="adversarial_eps")
# step 2.5 * eps / steps, random start; training costs steps + 1x
ADVERSARIAL_STEPS = Knob("steps", 3, "PGD steps per batch", 1, 100, stored_as="adversarial_steps")


def flag(default, help: str, choices=None):
    """A DefenceConfig field that `python -m core defences` offers as a flag of the same name (core.studies
    .config_flags): declared once, here, with its help and allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class DefenceConfig:
    # filter: which detector's scores decide (thresholded as the run's ThresholdConfig says)
    detector: str = flag("dae", "what filter / filter_purify use", choices=DETECTORS.names)
    seed: int = 0
    # the registered defences' own parameters (DefenceSpec.knobs), "defence.knob" -> value; unset knobs take their
    # spec's default. Files hold the set ones, and every stored one (Knob.stored_as: purify's sigma, jpeg's
    # jpeg_quality, ...) at the top level, as when they were fields of this config.
    knobs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "knobs", checked_knobs(self.knobs, {spec.name: spec for spec in DEFENCES.specs()}))
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}: choose one of {', '.join(DETECTORS.names())}")

    def to_dict(self) -> dict:
        stored = defence_stored_knobs()
        data = {"detector": self.detector, **{name: self.value(name) for name in stored}, "seed": self.seed}
        stored_settings = {f"{entry}.{knob.name}" for entry, knob in stored.values()}
        own = {name: value for name, value in self.knobs if name not in stored_settings}
        return {**data, "knobs": own} if own else data

    @classmethod
    def from_dict(cls, data: dict) -> "DefenceConfig":
        """The config of a to_dict (a grid file's): the stored knobs back from the top level."""
        data = dict(data)
        settings = dict(data.pop("knobs", None) or {})
        for name, (entry, knob) in defence_stored_knobs().items():
            if name in data:
                settings[f"{entry}.{knob.name}"] = data.pop(name)
        return cls(**data, knobs=settings)

    def value(self, name: str):
        """A setting by the name a key or file holds it under: detector, seed, or a stored knob (sigma, ...)."""
        if name in ("detector", "seed"):
            return getattr(self, name)
        entry, knob = defence_stored_knobs()[name]
        return self.knob(entry, knob.name)

    def key(self, defence: str) -> dict:
        """What keys a model trained behind this defence: the shared settings it reads (its spec's params: the seed,
        the detector, another defence's stored knob) and its own knobs, a stored one under its stored name."""
        spec = DEFENCES[defence]
        own = {knob.stored_as or f"{defence}.{knob.name}": self.knob(defence, knob.name) for knob in spec.knobs}
        return {"defence": defence, **{name: self.value(name) for name in spec.params}, **own}

    def knob(self, defence: str, name: str):
        """The value of the defence's knob `name` (its spec's default unless set)."""
        return knob_value(self.knobs, DEFENCES[defence], name)


def defence_stored_knobs() -> dict:
    """The defences' stored knobs (core.engine.registry.Knob.stored_as): stored name -> (defence, knob)."""
    return stored_knobs(DEFENCES)


@dataclass
class DefenceContext:
    """What the defender has: its DAE, the drop decision of any detector on the training set, its trusted clean
    images, and the run's classifier (a fresh one and its training recipe). cached(role, key, build, fit) -> a model
    fitted once per key and run (core.experiments.pipeline.ModelCache under the run's poisons); by default, fitted
    every time."""

    autoencoder: nn.Module
    drop_mask: Callable[[str], torch.Tensor]  # detector name -> bool per training image (True: dropped)
    trusted: ImageSet | None = None
    new_classifier: Callable[[], nn.Module] | None = None
    train_config: TrainConfig | None = None
    cached: Callable[..., nn.Module] = lambda role, key, build, fit: fit()


# ---- the operations ---------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded to the nearest grey level."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


class Purifier(nn.Module):
    """DAE(x + sigma * N(0, 1)) as a module: noise larger than the poison's eps drowns it, the DAE removes both. The
    training images and, at test time, every input go through this one operation (adaptive attacks differentiate
    through it); the noise is seeded and its stream restarts at reset()."""

    def __init__(self, autoencoder: nn.Module, sigma: float, seed: int):
        super().__init__()
        self.autoencoder, self.sigma, self.seed = autoencoder, sigma, seed
        self.stochastic = sigma > 0  # core.attacks.robust attacks it with EOT when asked
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma > 0:
            x = (x + self.sigma * torch.randn(x.shape, generator=self.generator).to(x.device)).clamp(0, 1)
        return self.autoencoder(x)


def purified(purifier: Purifier, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """uint8 images through the purifier (its noise stream from the start), as uint8."""
    getattr(purifier, "reset", lambda: None)()  # a noisy purifier restarts its noise stream; others have none
    return to_uint8(predict(purifier, images, batch_size)) if len(images) else images.clone()


def purify(
    autoencoder: nn.Module, images: torch.Tensor, sigma: float, seed: int, batch_size: int = 1024
) -> torch.Tensor:
    """DAE(x + sigma * N(0, 1)) of uint8 images as uint8 (the paper's DAE as a purifier of the training set)."""
    return purified(Purifier(autoencoder, sigma, seed), images, batch_size)


# A purifier fitted for purification (D-VAE 2024 and AVATAR fit theirs on the poisoned training set itself): the
# paper's DAE family with one stage less and a 4x wider code (16x less compression: 3,072 -> 512 numbers rather
# than 128), trained to map noisy copies of the training images back to them. Adam at 1e-3 reconstructs noisy
# (sigma 0.1) test images with half the error of the paper DAE's SGD at 0.2 (MSE 0.0039 vs 0.0086, compare preset,
# 10 passes, 66-74 s on 2 cores); a 1,024-number code gained little (0.0036) for 1.5x the time.
PURIFIER_MODEL = AutoencoderConfig(depth=2, width=32, latent_dim=512)
PURIFIER_TRAIN = TrainConfig(epochs=10, batch_size=128, optimizer="adam", learning_rate=1e-3, weight_decay=0.0)
PURIFIER_NOISY_COPIES = 2  # noisy copies of each training image per pass (fresh noise without a custom loop)


def fitted_purifier(train: ImageSet, context: "DefenceContext", config: "DefenceConfig") -> Purifier:
    """A purifier fitted on the (poisoned) training set: x + sigma * N(0, 1) -> x, cached per training set."""

    def fit() -> nn.Module:
        generator = torch.Generator().manual_seed(config.seed)
        targets = train.images.repeat(PURIFIER_NOISY_COPIES, 1, 1, 1)
        noisy = to_float_images(targets) + config.knob("purify", "sigma") * torch.randn(
            targets.shape, generator=generator
        )
        torch.manual_seed(config.seed)
        autoencoder = DenoisingAutoencoder(PURIFIER_MODEL)
        train_model(
            autoencoder, to_uint8(noisy), targets, reconstruction_loss, replace(PURIFIER_TRAIN, seed=config.seed)
        )
        return autoencoder

    key = {
        "purifier": PURIFIER_MODEL.to_dict(),
        "train": PURIFIER_TRAIN.to_dict(),
        "copies": PURIFIER_NOISY_COPIES,
        "data": train.digest(),
        "sigma": config.knob("purify", "sigma"),
        "seed": config.seed,
    }
    autoencoder = context.cached("purifier", key, lambda: DenoisingAutoencoder(PURIFIER_MODEL), fit)
    return Purifier(autoencoder.eval(), config.knob("purify", "sigma"), config.seed)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each uint8 image through a PIL JPEG encode / decode at `quality`."""
    out = torch.empty_like(images)
    for index, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        out[index] = torch.from_numpy(np.asarray(Image.open(buffer).convert("RGB")).copy()).permute(2, 0, 1)
    return out


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """torchvision's rgb_to_grayscale, copied to the three channels the classifier takes (uint8 in, uint8 out)."""
    return rgb_to_grayscale(images, num_output_channels=3)


# The JPEG standard's quantisation tables (ITU T.81, Annex K), scaled by quality as libjpeg (and so PIL) does.
_LUMINANCE_TABLE = [
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
]
_CHROMINANCE_TABLE = [
    [17, 18, 24, 47] + [99] * 4,
    [18, 21, 26, 66] + [99] * 4,
    [24, 26, 56] + [99] * 5,
    [47, 66] + [99] * 6,
] + [[99] * 8] * 4


def quantisation_table(table: list[list[int]], quality: int) -> torch.Tensor:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return ((torch.tensor(table, dtype=torch.float32) * scale + 50) // 100).clamp(1, 255)


def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II as a matrix D: coefficients of a block B are D @ B @ D.T."""
    k, n = torch.arange(8.0)[:, None], torch.arange(8.0)[None, :]
    matrix = torch.cos((2 * n + 1) * k * torch.pi / 16) * (2 / 8) ** 0.5
    matrix[0] /= 2**0.5
    return matrix


class DifferentiableJPEG(nn.Module):
    """JPEG at `quality` as a differentiable function of [0, 1] images (Shin & Song 2017): YCbCr, 4:2:0 chroma
    subsampling, 8x8 DCT, quantisation with rounding replaced by x -> round(x) + (x - round(x))^3, and back. Within
    a few grey levels of PIL's encoder (tests/test_defences.py); attackers craft through it
    (core/threats/adaptive.py)."""

    def __init__(self, quality: int = 10):
        super().__init__()
        self.register_buffer("dct", _dct_matrix())
        self.register_buffer("luminance", quantisation_table(_LUMINANCE_TABLE, quality))
        self.register_buffer("chrominance", quantisation_table(_CHROMINANCE_TABLE, quality))

    def _through_blocks(self, channel: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        n, h, w = channel.shape
        blocks = (channel - 128).reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # (n, rows, cols, 8, 8)
        scaled = self.dct @ blocks @ self.dct.T / table
        rounded = torch.round(scaled)
        coefficients = (rounded + (scaled - rounded) ** 3) * table
        return (self.dct.T @ coefficients @ self.dct).transpose(2, 3).reshape(n, h, w) + 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = (x * 255).unbind(1)
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
        cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
        y = self._through_blocks(y, self.luminance)
        chroma = nn.functional.avg_pool2d(torch.stack([cb, cr], 1), 2)
        cb, cr = (
            nn.functional.interpolate(self._through_blocks(c, self.chrominance)[:, None], scale_factor=2)[:, 0]
            for c in chroma.unbind(1)
        )
        rgb = torch.stack(
            [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], 1
        )
        return rgb.clamp(0, 255) / 255


class GrayscaleInput(nn.Module):
    """Grayscale as the model's first layer at test time (differentiable, so adaptive attacks see through it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rgb_to_grayscale(x, num_output_channels=3)


def adversary(config: DefenceConfig):
    """PGD at adversarial_eps against the model being trained (Madry et al.): the accepted baseline."""
    eps, steps = config.knob("adversarial_training", "eps"), config.knob("adversarial_training", "steps")
    generator = torch.Generator().manual_seed(config.seed)

    def attack(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, labels, eps, 2.5 * eps / steps, steps, generator=generator)

    return attack


# ---- the registry -------------------------------------------------------------------------------


def _filtered(train: ImageSet, context: DefenceContext, config: DefenceConfig) -> ImageSet:
    return train.subset(torch.nonzero(~context.drop_mask(config.detector)).flatten())


def _purified(train: ImageSet, context: DefenceContext, config: DefenceConfig) -> ImageSet:
    return ImageSet(
        purify(context.autoencoder, train.images, config.knob("purify", "sigma"), config.seed), train.labels
    )


DEFENCES.register(
    DefenceSpec(
        "filter",
        "Filter: drop images a detector flags (the paper's, with the DAE)",
        "Drops every training image the chosen detector scores above the run's threshold.",
        _filtered,
        params=("detector",),
    )
)
DEFENCES.register(
    DefenceSpec(
        "purify",
        "Purify the training set only: DAE(x + noise), raw test images",
        "Replaces every training image by the paper DAE's reconstruction of it with Gaussian noise of std sigma added "
        "(sigma 0: plain reconstruction); test images are not purified (how the first grid measured it).",
        _purified,
        params=("seed",),
        purifies_with_run_dae=True,
        knobs=(SIGMA,),
    )
)
DEFENCES.register(
    DefenceSpec(
        "filter_purify",
        "Filter, then purify what is left",
        "Drops what the detector flags, then replaces the rest by DAE(x + noise).",
        lambda train, context, config: _purified(_filtered(train, context, config), context, config),
        params=("detector", "sigma", "seed"),
        purifies_with_run_dae=True,
    )
)
DEFENCES.register(
    DefenceSpec(
        "purify_test",
        "Purify at train and test time: the paper's DAE",
        "Every training image and every test input goes through DAE(x + noise) with the paper's DAE (fitted on the "
        "trusted set to undo small perturbations): purification as its papers deploy it.",
        lambda train, context, config: train,
        params=("sigma", "seed"),
        input_transform=lambda train, context, config: Purifier(
            context.autoencoder, config.knob("purify", "sigma"), config.seed
        ),
        purifies_with_run_dae=True,
    )
)
DEFENCES.register(
    DefenceSpec(
        "purify_fitted",
        "Purify at train and test time: a purifier fitted on the training set",
        "A denoising autoencoder that compresses 4x less than the paper's, fitted on the poisoned training set itself "
        "to map x + noise back to x; every training image and every test input goes through it (as D-VAE, AVATAR).",
        lambda train, context, config: train,
        params=("sigma", "seed"),
        input_transform=fitted_purifier,
    )
)
DEFENCES.register(
    DefenceSpec(
        "jpeg",
        "JPEG compression",
        "Re-encodes every training image as JPEG at the given quality (image shortcut squeezing).",
        lambda train, context, config: ImageSet(jpeg(train.images, config.knob("jpeg", "quality")), train.labels),
        knobs=(JPEG_QUALITY,),
    )
)
DEFENCES.register(
    DefenceSpec(
        "grayscale",
        "Grayscale",
        "Trains and tests on grayscale copies of the images (image shortcut squeezing).",
        lambda train, context, config: ImageSet(grayscale(train.images), train.labels),
        test_input=lambda config: GrayscaleInput(),
    )
)
DEFENCES.register(
    DefenceSpec(
        "adversarial_training",
        "Adversarial training (PGD)",
        "Trains on PGD adversarial examples of the classifier itself at adversarial_eps, made fresh every batch.",
        lambda train, context, config: train,
        params=("seed",),
        adversary=adversary,
        knobs=(ADVERSARIAL_EPS, ADVERSARIAL_STEPS),
    )
)
