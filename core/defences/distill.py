"""Defensive distillation (Papernot et al. 2016).

The teacher is trained on hard labels with softmax(logits / T); its soft labels are
softmax(teacher logits / T); a student of the same architecture is trained at the same T on them.
Both are used and evaluated at T = 1, i.e. on their raw logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from core.engine.data import ImageSet
from core.engine.models import Classifier, ClassifierConfig
from core.engine.recipe import init_seed
from core.engine.train import TrainConfig, TrainingEvent, hard_label_loss, predict, soft_label_loss, train


def classifier_train_config(**overrides) -> TrainConfig:
    """Classifier recipe 2's settings (augmented SGD, one-cycle, 8 epochs): the compare and sweep presets, whose
    shipped grids were made with it."""
    return TrainConfig(**{"epochs": 8, "batch_size": 128, "learning_rate": 0.05, "augment": True, **overrides})


# Classifier recipe 3 (the paper and quick presets), chosen with bench/training.py on the paper preset's 35,288
# training images, full test set, 2 threads, one run each (bench/results/training.json holds every lever): recipe
# 2's 8 epochs reach 98.92% in 596 s; 2 epochs alone 97.77% (122 s); with label smoothing 0.1, 98.04%; with label
# smoothing and batches of 64 (twice the steps, the same lr), 98.53% in 134 s (98.35% for run seed 1). EMA, a short
# warm-up, batches of 256, per-image normalisation and batches of 32 did not beat it.
FAST_RECIPE = {"epochs": 2, "label_smoothing": 0.1, "batch_size": 64}


def fast_classifier_train_config(**overrides) -> TrainConfig:
    """Classifier recipe 3: recipe 2's optimiser and augmentation with FAST_RECIPE's passes and knobs."""
    return classifier_train_config(**{**FAST_RECIPE, **overrides})


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 5.0
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=classifier_train_config)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def soft_labels(teacher: torch.nn.Module, images: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(teacher logits / T) for each image, (N, classes)."""
    return torch.softmax(predict(teacher, images) / temperature, dim=1)


def train_classifier(
    data: ImageSet,
    model_config: ClassifierConfig,
    train_config: TrainConfig,
    temperature: float = 1.0,
    progress: Callable[[TrainingEvent], None] | None = None,
    should_stop=None,
    adversary=None,
    steps: int | None = None,
) -> Classifier:
    """A fresh classifier trained on hard labels at temperature T (T = 1: an ordinary classifier).

    adversary: core.engine.train.Adversary for adversarial training (the caller keys its cache entry with it).
    steps: a fixed number of optimiser steps instead of the config's epochs (core.engine.train.train)."""
    torch.manual_seed(init_seed(train_config.seed, "classifier"))
    model = Classifier(model_config)
    train(
        model,
        data.images,
        data.labels,
        hard_label_loss(temperature, train_config.label_smoothing),
        train_config,
        progress=progress,
        should_stop=should_stop,
        adversary=adversary,
        steps=steps,
    )
    return model


def train_student(
    images: torch.Tensor,
    targets: torch.Tensor,
    config: DistillConfig,
    progress: Callable[[TrainingEvent], None] | None = None,
    should_stop=None,
    steps: int | None = None,
) -> Classifier:
    """A fresh classifier trained at T on the teacher's soft labels (steps: as in train_classifier)."""
    torch.manual_seed(init_seed(config.train.seed, "student"))
    student = Classifier(config.model)
    train(
        student,
        images,
        targets,
        soft_label_loss(config.temperature),
        config.train,
        progress=progress,
        should_stop=should_stop,
        steps=steps,
    )
    return student


def distill(data: ImageSet, config: DistillConfig, progress=None, should_stop=None) -> tuple[Classifier, Classifier]:
    """Teacher at T on data, then a student at T on its soft labels; returns (teacher, student)."""
    teacher = train_classifier(data, config.model, config.train, config.temperature, progress, should_stop)
    student = train_student(
        data.images, soft_labels(teacher, data.images, config.temperature), config, progress, should_stop
    )
    return teacher, student
