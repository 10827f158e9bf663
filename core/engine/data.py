"""GTSRB as tensors: the whole split as one uint8 tensor (N, 3, 32, 32) plus int64 labels.

Images are decoded once through torchvision's GTSRB file list, resized to 32x32 RGB and cached as a
safetensors file outside the data root (the data root may be read-only), keyed by the root and its
file list, so later loads take a second or two.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from core.engine.recipe import RECIPE_VERSIONS, sampling_seed
from core.engine.storage import atomic_write, set_aside

IMAGE_SIZE = 32
NUM_CLASSES = 43

CLASS_NAMES = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 t",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 t prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 t",
)

EXPECTED_LAYOUT = (
    "<root>/gtsrb/GTSRB/Training/000NN/*.ppm, <root>/gtsrb/GTSRB/Final_Test/Images/*.ppm and "
    "<root>/gtsrb/GT-final_test.csv (torchvision's GTSRB layout)"
)


class DatasetNotFoundError(FileNotFoundError):
    """GTSRB is not where we looked. The message says where we looked and how to fix it."""


@dataclass
class ImageSet:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,), on the CPU unless moved."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must be uint8 (N, 3, 32, 32), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be one per image")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __repr__(self) -> str:
        return f"ImageSet({len(self)} images)"

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))

    def digest(self) -> str:
        """SHA-256 of the pixels and labels: what a model trained on this set saw, whatever the data root was
        (a full-size GTSRB resized here and the pre-resized 32x32 copy differ in pixels, so in digest)."""
        digest = hashlib.sha256(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()[:20]


def default_root() -> Path:
    return Path(os.environ.get("GTSRB_ROOT", "./data"))


def cache_dir() -> Path:
    """Where decoded datasets are cached: $DAE_DISTILL_CACHE, else ~/.cache/dae-distill."""
    return Path(os.environ.get("DAE_DISTILL_CACHE", Path.home() / ".cache" / "dae-distill"))


def dataset_available(root: str | Path | None = None) -> bool:
    base = Path(root) if root is not None else default_root()
    return (base / "gtsrb" / "GTSRB" / "Training").is_dir() and (base / "gtsrb" / "GT-final_test.csv").is_file()


def require_dataset(root: str | Path | None = None, download: bool = False) -> Path:
    """Fail fast, before any work starts, when GTSRB is not where we will look for it."""
    base = Path(root) if root is not None else default_root()
    if not download and not dataset_available(base):
        raise DatasetNotFoundError(
            f"GTSRB not found under '{base}'. Set GTSRB_ROOT to the folder holding {EXPECTED_LAYOUT}, "
            "or pass --download on a machine with internet."
        )
    return base


def _torchvision_samples(root: Path, split: str, download: bool) -> list[tuple[str, int]]:
    # deferred: torchvision.datasets adds 2-3 s to every import of the engine and only a first download needs it
    from torchvision.datasets import GTSRB

    try:
        dataset = GTSRB(root=str(root), split=split, download=download)
    except (RuntimeError, FileNotFoundError):
        raise DatasetNotFoundError(
            f"GTSRB {split} split not found under '{root}'. Set GTSRB_ROOT to the folder holding "
            f"{EXPECTED_LAYOUT}, or pass download=True (CLI: --download) on a machine with internet."
        ) from None
    return list(dataset._samples)  # torchvision's own (path, label) list: the one source of truth


def _decode(path: str) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _cache_key(root: Path, split: str, samples: list[tuple[str, int]]) -> str:
    digest = hashlib.sha256(f"{root.resolve()}|{split}|{IMAGE_SIZE}|{RECIPE_VERSIONS['data']}".encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_gtsrb(split: str = "train", root: str | Path | None = None, download: bool = False) -> ImageSet:
    """Load a GTSRB split ('train': 39,209 images, 'test': 12,630) as one uint8 tensor, cached."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else default_root()
    samples = _torchvision_samples(root, split, download)
    if not samples:
        raise DatasetNotFoundError(f"GTSRB {split} split under '{root}' holds no images; expected {EXPECTED_LAYOUT}.")
    cache_file = cache_dir() / f"gtsrb-{split}-{_cache_key(root, split, samples)}.safetensors"
    if cache_file.exists():
        try:
            tensors = load_file(str(cache_file))
            return ImageSet(tensors["images"], tensors["labels"])
        except Exception as error:  # noqa: BLE001 - a corrupt cache is kept aside and rebuilt, never trusted
            set_aside(cache_file.parent, cache_file.name.removesuffix(".safetensors"), error)
    with ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 2)) as pool:
        arrays = list(pool.map(_decode, [path for path, _ in samples], chunksize=256))
    images = torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache_file, lambda tmp: save_file({"images": images, "labels": labels}, str(tmp)))
    return ImageSet(images, labels)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices per class: round(fraction * class size) go to the second part (at least 1 if fraction > 0).

    Returns (first, second) sorted index tensors. Used for train / trusted and for subsets.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    first, second = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_second = int(round(fraction * len(members)))
        if fraction > 0 and n_second == 0:
            n_second = 1
        second.append(members[:n_second])
        first.append(members[n_second:])
    return torch.sort(torch.cat(first)).values, torch.sort(torch.cat(second)).values


@dataclass
class GTSRBSplits:
    """The defender's view: *train* (may be poisoned), *trusted* (clean, held by the defender), *test*."""

    train: ImageSet
    trusted: ImageSet
    test: ImageSet


def load_splits(
    root: str | Path | None = None,
    trusted_fraction: float = 0.1,
    seed: int = 0,
    train_subset: float = 1.0,
    test_subset: float = 1.0,
    download: bool = False,
) -> GTSRBSplits:
    """Official train split -> stratified train / trusted; official test split for evaluation only.

    train_subset / test_subset < 1 keep a stratified fraction (for quick runs and tests).
    """
    if not 0.0 < trusted_fraction < 1.0:
        raise ValueError(f"trusted_fraction must be in (0, 1), got {trusted_fraction}")
    for name, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    full_train = load_gtsrb("train", root, download)
    test = load_gtsrb("test", root, download)
    if train_subset < 1.0:
        _, keep = stratified_split(full_train.labels, train_subset, seed)
        full_train = full_train.subset(keep)
    if test_subset < 1.0:
        _, keep = stratified_split(test.labels, test_subset, sampling_seed(seed, "test_subset"))
        test = test.subset(keep)
    train_index, trusted_index = stratified_split(full_train.labels, trusted_fraction, seed)
    return GTSRBSplits(full_train.subset(train_index), full_train.subset(trusted_index), test)
