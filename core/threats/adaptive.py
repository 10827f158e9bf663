"""Poisons that know the defence: our strong poisons crafted through the image shortcut squeezing they must survive.

A defence is judged against the attacker who knows it. Grayscale restores error-minimising noise and JPEG restores
TAP on the shipped grid (README); these two put the defence in the attacker's loop:
- unlearnable_grayscale: error-minimising noise (core/threats/unlearnable.py) whose model sees grayscale copies, so
  the noise must be a shortcut in luminance, the one channel grayscale keeps;
- tap_jpeg: TAP (core/threats/tap.py) through a differentiable JPEG at the defence's quality 10
  (core.defences.DifferentiableJPEG), so the poison pushes the surrogate toward the next class after compression;
- tap_lowpass: TAP through the sharpen_lowpass defence's filter (core/defences/sharpen_lowpass.py) at the cutoff
  `python -m core blind` chose for it (8 cycles per image; a knob), so the poison lives in the frequencies the filter
  keeps (issue 38: the new defence that did best on the first cells, against the attacker who knows it);
- tap_grayscale_jpeg: TAP through the grayscale_jpeg defence (core/defences/grayscale_jpeg.py) at the quality `python
  -m core blind` chose for it (30; a knob): the targeted PGD descends the loss on JPEG(grey(x + delta)) of a copy of
  the surrogate first fine-tuned on the defence's own view of the clean training set, so it has seen grey images.
Their defaults and delivery are those of the poison they adapt.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from torch import nn

from core.defences import DifferentiableJPEG, GrayscaleInput, grayscale, jpeg
from core.defences.sharpen_lowpass import SharpenLowpass
from core.engine import train as training
from core.engine.registry import THREATS, Knob, ThreatSpec
from core.threats.tap import poison_with_tap
from core.threats.unlearnable import poison_with_unlearnable_noise

JPEG_QUALITY = 10  # the jpeg defence's default (core.defences.DefenceConfig.jpeg_quality), the anchor's
LOWPASS_CUTOFF = 8  # sharpen_lowpass's blind choice (checkpoints/blind/settings.json); tap_lowpass's knob default
GRAYSCALE_JPEG_QUALITY = 30  # grayscale_jpeg's blind choice (checkpoints/blind/settings.json); the knob's default
# The surrogate's fine-tuning on the defence's view: two passes at a tenth of the compare preset's rate, enough to
# adapt a trained model to grey inputs without retraining it (one training's cost is the defence grid's unit).
ADAPTATION = training.TrainConfig(epochs=2, learning_rate=0.005, augment=True)


def unlearnable_through_grayscale(train, surrogate, config, progress=None):
    """Error-minimising noise trained alongside a model that sees rgb_to_grayscale(x + noise)."""
    return poison_with_unlearnable_noise(train, nn.Sequential(GrayscaleInput(), surrogate), config, progress)


def tap_through_jpeg(train, surrogate, config, progress=None):
    """TAP whose targeted PGD descends the surrogate's loss on JPEG(x + delta)."""
    return poison_with_tap(train, nn.Sequential(DifferentiableJPEG(JPEG_QUALITY), surrogate).eval(), config, progress)


def tap_through_lowpass(train, surrogate, config, progress=None):
    """TAP whose targeted PGD descends the surrogate's loss on sharpen_lowpass(x + delta)."""
    filtered = SharpenLowpass(amount=1.0, cutoff=config.knob("tap_lowpass", "cutoff"))
    return poison_with_tap(train, nn.Sequential(filtered, surrogate).eval(), config, progress)


def surrogate_on_the_defences_view(train, surrogate, quality: int, seed: int) -> nn.Module:
    """A copy of the surrogate fine-tuned on grey, JPEG-encoded clean training images (what grayscale_jpeg trains on);
    the surrogate itself is left as it was."""
    adapted = copy.deepcopy(surrogate)
    view = jpeg(grayscale(train.images), quality)
    device = next(surrogate.parameters()).device
    config = replace(ADAPTATION, seed=seed)
    training.train(adapted, view, train.labels, training.hard_label_loss(), config, device=device)
    return adapted.eval()


def tap_through_grayscale_jpeg(train, surrogate, config, progress=None):
    """TAP whose targeted PGD descends the adapted surrogate's loss on JPEG(grey(x + delta))."""
    quality = config.knob("tap_grayscale_jpeg", "quality")
    adapted = surrogate_on_the_defences_view(train, surrogate, quality, config.seed)
    through = nn.Sequential(GrayscaleInput(), DifferentiableJPEG(quality), adapted).eval()
    return poison_with_tap(train, through, config, progress)


for base, name, label, apply, through, known, knobs in (
    (
        "unlearnable",
        "unlearnable_grayscale",
        "Unlearnable, adaptive: crafted through grayscale",
        unlearnable_through_grayscale,
        "a model that sees grayscale copies (so grayscale cannot squeeze it out)",
        "grayscale",
        (),
    ),
    (
        "tap",
        "tap_jpeg",
        "TAP, adaptive: crafted through JPEG",
        tap_through_jpeg,
        f"a differentiable JPEG at quality {JPEG_QUALITY} (so JPEG cannot squeeze it out)",
        "jpeg",
        (),
    ),
    (
        "tap",
        "tap_lowpass",
        "TAP, adaptive: crafted through sharpening and a low-pass filter",
        tap_through_lowpass,
        "the sharpen_lowpass filter (so the poison survives it)",
        "sharpen_lowpass",
        (Knob("cutoff", LOWPASS_CUTOFF, "the filter's cutoff the attacker crafts through, cycles per image", 1, 23),),
    ),
    (
        "tap",
        "tap_grayscale_jpeg",
        "TAP, adaptive: crafted through grayscale and JPEG",
        tap_through_grayscale_jpeg,
        "grayscale and a differentiable JPEG, on a surrogate fine-tuned on grey JPEG images (so grayscale_jpeg cannot "
        "squeeze it out)",
        "grayscale_jpeg",
        (Knob("quality", GRAYSCALE_JPEG_QUALITY, "the JPEG quality the attacker crafts through, 1..95", 1, 95),),
    ),
):
    spec = THREATS.registered(base)  # registered above it by core/threats/__init__.py
    THREATS.register(
        ThreatSpec(
            name=name,
            label=label,
            description=f"{spec.description} Crafted through {through}: the attacker knows the defence.",
            apply=apply,
            default_fraction=spec.default_fraction,
            fraction_of=spec.fraction_of,
            params=spec.params,
            needs_surrogate=True,
            metrics=spec.metrics,
            defaults=spec.defaults,
            grid_cases={name: {"adapts": (base, known)}},
            knobs=knobs,
            adapts=base,
        )
    )
