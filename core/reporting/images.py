"""A user's image: reading an uploaded file as a person would see it, and what a run's models say about it.

Used by the Your images page and by core.reporting.sign_examples (README's example verdicts); plain tensors and dicts
in and out.
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from core.detectors.abstain import expected_kl, mc_dropout_probabilities
from core.detectors.detect import SupervisedDetector
from core.engine.data import CLASS_NAMES, IMAGE_SIZE
from core.engine.train import predict

if TYPE_CHECKING:
    from core.experiments.run import Run


ACCEPTED_FORMATS = "PNG, JPEG, PPM, WebP, TIFF, BMP or GIF"  # what the page's uploader lets through
# Larger images are downscaled, however large; PIL itself refuses a decompression bomb (over 2 x
# Image.MAX_IMAGE_PIXELS, about 179 megapixels) before decoding it, and that refusal is kept.


class UploadError(ValueError):
    """An uploaded file that is not a usable image; the message says what to do."""


def read_upload(data: bytes, name: str = "upload") -> torch.Tensor:
    """Bytes of an image file -> uint8 (3, 32, 32) as a person would see the file: EXIF rotation applied, deep and
    float images scaled to 8 bits, transparency over white, any size downscaled, a non-square image centre-cropped to
    a square (GTSRB's crops centre the sign; squashing would distort it). Raises UploadError with a clear message."""
    if not data:
        raise UploadError(f"{name} is empty: upload a {ACCEPTED_FORMATS} image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (IMAGE_SIZE * 8, IMAGE_SIZE * 8))  # JPEG: decode a large photo at a fraction of its size
            image.load()  # decodes fully: truncated files fail here
            upright = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
            rgb = ImageOps.fit(as_rgb8(upright, name), (IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    except UploadError:
        raise
    except Image.DecompressionBombError as error:
        raise UploadError(f"{name} is too large to decode safely ({error}); downscale it first") from None
    except UnidentifiedImageError:
        raise UploadError(f"{name} is not an image we can read: upload a {ACCEPTED_FORMATS} file") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as error:  # what PIL's decoders raise
        raise UploadError(f"{name} could not be decoded ({error}); it may be truncated or corrupt") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def as_rgb8(image: Image.Image, name: str = "upload") -> Image.Image:
    """Any mode PIL opens -> 8-bit RGB. PIL's own convert("RGB") clips 16-bit grey to 255 (a 16-bit PNG comes out
    white) and float images to 0 or 1, so those are scaled here: 16-bit by 65535, 32-bit integers the same when they
    fit in 16 bits (else by their range), floats from [0, 1] when they lie in it (else by their range)."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if mode == "F" and low >= 0 and high <= 1:
            low, high = 0.0, 1.0
        elif mode != "F" and low >= 0 and high <= 65535:
            low, high = 0.0, 65535.0
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    try:
        if mode in TRANSPARENT_MODES or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")  # transparent areas look white, as in viewers
        return image.convert("RGB")
    except ValueError:
        raise UploadError(f"{name} has colour mode {mode}, which we cannot convert: save it as an RGB PNG") from None


def top_classes(
    model: torch.nn.Module, images: torch.Tensor, k: int = 5, temperature: float = 1.0
) -> list[list[tuple[str, float]]]:
    """For each image, the k most likely classes as (name, probability) at the given temperature."""
    probabilities = torch.softmax(predict(model, images) / temperature, dim=1)
    values, indices = probabilities.topk(k, dim=1)
    return [
        [(CLASS_NAMES[i], float(p)) for p, i in zip(row_values, row_indices)]
        for row_values, row_indices in zip(values.tolist(), indices.tolist())
    ]


ERROR_MAP_QUANTILE = 0.99  # the error drawn fully red: the batch's largest made nearly every map solid blue


def error_colours(heat: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] -> RGB in [0, 1], blue (0) through red (1): the error maps' colour scale."""
    return torch.stack([heat, torch.zeros_like(heat), 1 - heat], dim=-3)


def error_colour_bar(width: int = 160, height: int = 12) -> torch.Tensor:
    """The error maps' colour scale as an RGB image (3, height, width) in [0, 1], low error on the left."""
    return error_colours(torch.linspace(0, 1, width).expand(height, width))


def reconstruction_view(autoencoder: torch.nn.Module, images: torch.Tensor) -> dict:
    """For uint8 or [0, 1] images: the DAE's reconstructions, each image's MSE, and an error map as RGB in [0, 1]
    (per-pixel squared error averaged over colour, blue 0 to red at "error_scale": the 99th percentile of the batch's
    per-pixel errors, so that differences are visible; errors above it are red too)."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    reconstruction = predict(autoencoder, x)
    error = ((reconstruction - x) ** 2).mean(dim=1)
    scale = float(torch.quantile(error.flatten().double(), ERROR_MAP_QUANTILE)) or float(error.max()) or 1.0
    return {
        "input": x,
        "reconstruction": reconstruction,
        "mse": ((reconstruction - x) ** 2).flatten(1).mean(dim=1),
        "error_map": error_colours((error / scale).clamp(0, 1)),
        "error_scale": scale,
    }


def image_verdicts(
    x: torch.Tensor, run: "Run", autoencoder, student, undefended, residual_model, dae_threshold: float, k: int = 5
) -> dict:
    """Everything Your images shows for one image in [0, 1] (3, 32, 32): the DAE's view and verdict at dae_threshold,
    the noise-residual detector's verdict at the run's threshold (when the run ships one), both models' top-k."""
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    view = reconstruction_view(autoencoder, x.unsqueeze(0))
    mse = float(view["mse"][0])
    verdicts = {
        "reconstruction": view["reconstruction"][0],
        "error_map": view["error_map"][0],
        "error_scale": view["error_scale"],
        "mse": mse,
        "dae_dropped": mse > dae_threshold,
        "student_top": top_classes(student, x.unsqueeze(0), k)[0],
        "undefended_top": top_classes(undefended, x.unsqueeze(0), k)[0],
    }
    if residual_model is not None:
        residual = float(SupervisedDetector(residual_model, device=torch.device("cpu")).score(x.unsqueeze(0))[0])
        verdicts.update(residual=residual, residual_flagged=residual > run.threshold_of("supervised"))
    if run.abstention and run.abstention.get("model", "filter_distillation") == "filter_distillation":
        verdicts.update(student_abstention(student, x, run.abstention))
    return verdicts


def student_abstention(student, x: torch.Tensor, abstention: dict) -> dict:
    """The student's MC-dropout verdict on one image in [0, 1] at the run's cut-off (`python -m core abstain`
    calibrated it on trusted clean images at 5% false abstentions): a softmax of 0.9998 says little on its own."""
    config = abstention["config"]
    probabilities = mc_dropout_probabilities(student, x.unsqueeze(0), config["passes"], config["seed"])
    mean = probabilities.mean(dim=0)[0]
    disagreement = float(expected_kl(probabilities)[0])
    return {
        "disagreement": disagreement,
        "abstain": disagreement > abstention["cutoff"],
        "mc_class": CLASS_NAMES[int(mean.argmax())],
        "mc_probability": float(mean.max()),
        "abstention_fpr": config["fpr"],
        "abstention_cutoff": float(abstention["cutoff"]),
    }
