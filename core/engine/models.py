"""Models: one classifier architecture for surrogate, teacher and student, and a denoising autoencoder.

Both take images in [0, 1] of shape (N, 3, 32, 32). The classifier normalises inside itself so that
attacks, detectors and users all work on plain pixel values, and returns logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# Per-channel statistics of the GTSRB training set (measured once; they only condition the inputs).
GTSRB_MEAN = (0.3403, 0.3121, 0.3214)
GTSRB_STD = (0.2724, 0.2608, 0.2669)


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of the classifier. Papernot's distillation uses the same one for teacher and student."""

    num_classes: int = 43
    width: int = 32  # channels of the first stage; doubled at each of the three stages
    hidden: int = 256  # units of the fully connected layer before the head
    dropout: float = 0.3  # before the head; also what MC-dropout switches on
    # How inputs are normalised inside the model: "dataset" (GTSRB's per-channel mean and std) or "image" (each
    # image to zero mean and unit std over its pixels: GTSRB's lighting varies widely, Sermanet & LeCun 2011).
    input_norm: str = "dataset"

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.width < 1 or self.hidden < 1:
            raise ValueError(f"width and hidden must be >= 1, got {self.width} and {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.input_norm not in ("dataset", "image"):
            raise ValueError(f"input_norm must be 'dataset' or 'image', got {self.input_norm!r}")

    def to_dict(self) -> dict:
        """Every field; input_norm only when it is not "dataset", so earlier configs keep their keys."""
        data = asdict(self)
        if data["input_norm"] == "dataset":
            del data["input_norm"]
        return data


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Classifier(nn.Module):
    """A small VGG-style CNN: three stages of conv-BN-ReLU (the first two doubled) with max pooling."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        w = self.config.width
        self.register_buffer("mean", torch.tensor(GTSRB_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(GTSRB_STD).view(1, 3, 1, 1))
        self.features = nn.Sequential(
            _conv_block(3, w),
            _conv_block(w, w),
            nn.MaxPool2d(2),  # 16x16
            _conv_block(w, 2 * w),
            _conv_block(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 8x8
            _conv_block(2 * w, 4 * w),
            nn.MaxPool2d(2),  # 4x4
        )
        self.embedding = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * 4 * 4, self.config.hidden), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout(self.config.dropout)
        self.head = nn.Linear(self.config.hidden, self.config.num_classes)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.input_norm == "image":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1 / 255)  # a flat image: no blow-up
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (used by feature-space detectors)."""
        return self.embedding(self.features(self.normalise(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of the convolutional denoising autoencoder."""

    depth: int = 3  # number of stride-2 stages in encoder and decoder (32 -> 32 / 2**depth)
    width: int = 32  # channels of the first stage; doubled at each stage
    latent_dim: int = 128  # size of the bottleneck vector h

    def __post_init__(self):
        if not 1 <= self.depth <= 4:
            raise ValueError(f"depth must be in 1..4, got {self.depth}")
        if self.width < 1 or self.latent_dim < 1:
            raise ValueError(f"width and latent_dim must be >= 1, got {self.width} and {self.latent_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


class DenoisingAutoencoder(nn.Module):
    """Encoder f_e: strided convolutions down to a latent vector h; decoder f_d mirrors it; sigmoid out."""

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = config or AutoencoderConfig()
        depth, width = self.config.depth, self.config.width
        channels = [3] + [width * 2**i for i in range(depth)]
        self.spatial = 32 // 2**depth
        flat = channels[-1] * self.spatial * self.spatial

        encoder: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            encoder += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        encoder += [nn.Flatten(), nn.Linear(flat, self.config.latent_dim)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [
            nn.Linear(self.config.latent_dim, flat),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (channels[-1], self.spatial, self.spatial)),
        ]
        reversed_channels = channels[::-1]
        for i, (c_in, c_out) in enumerate(zip(reversed_channels[:-1], reversed_channels[1:])):
            last = i == depth - 1
            decoder.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=last))
            if not last:  # batch norm keeps plain SGD (the paper's optimiser) from stalling at the mean image
                decoder += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        decoder.append(nn.Sigmoid())
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
