import time

import pytest
import torch

from core import data
from core.data import (CLASS_NAMES, NUM_CLASSES, DatasetNotFoundError, ImageSet, load_gtsrb, load_splits,
                       stratified_split)


def test_full_splits_have_the_official_counts(gtsrb_root):
    train = load_gtsrb("train", gtsrb_root)
    test = load_gtsrb("test", gtsrb_root)
    assert len(train) == 39_209 and len(test) == 12_630
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)
    assert torch.unique(train.labels).tolist() == list(range(NUM_CLASSES))
    assert torch.unique(test.labels).tolist() == list(range(NUM_CLASSES))
    assert len(CLASS_NAMES) == NUM_CLASSES == 43


def test_train_trusted_split_is_stratified_disjoint_and_reproducible(gtsrb_root):
    a = load_splits(gtsrb_root, trusted_fraction=0.1, seed=3)
    b = load_splits(gtsrb_root, trusted_fraction=0.1, seed=3)
    c = load_splits(gtsrb_root, trusted_fraction=0.1, seed=4)
    assert len(a.train) + len(a.trusted) == 39_209
    assert torch.equal(a.trusted.images, b.trusted.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.trusted.images, c.trusted.images)
    full = load_gtsrb("train", gtsrb_root)
    per_class_full = torch.bincount(full.labels, minlength=43).float()
    per_class_trusted = torch.bincount(a.trusted.labels, minlength=43).float()
    # every class keeps its 10% share, to within one image of rounding
    assert torch.all((per_class_trusted - 0.1 * per_class_full).abs() <= 1.0)
    assert len(a.test) == 12_630


def test_stratified_split_indices_partition():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 5)
    first, second = stratified_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([first, second]).tolist()) == list(range(35))
    assert torch.bincount(labels[second]).tolist() == [2, 4, 1]
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, 1.5, seed=0)


def test_cache_round_trips_and_is_fast(gtsrb_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DAE_DISTILL_CACHE", str(tmp_path))
    first = load_gtsrb("test", gtsrb_root)
    cached = list(tmp_path.glob("gtsrb-test-*.safetensors"))
    assert len(cached) == 1
    started = time.perf_counter()
    second = load_gtsrb("test", gtsrb_root)
    assert time.perf_counter() - started < 3.0
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    # a corrupt cache file is rebuilt rather than trusted
    cached[0].write_bytes(b"not a safetensors file")
    third = load_gtsrb("test", gtsrb_root)
    assert torch.equal(first.images, third.images)


def test_decoded_images_match_torchvision(gtsrb_root):
    from torchvision.datasets import GTSRB
    import numpy as np

    ours = load_gtsrb("test", gtsrb_root)
    reference = GTSRB(root=str(gtsrb_root), split="test")
    for index in (0, 1234, 12_629):
        image, label = reference[index]
        expected = torch.from_numpy(np.asarray(image.convert("RGB").resize((32, 32))).copy()).permute(2, 0, 1)
        assert torch.equal(ours.images[index], expected) and int(ours.labels[index]) == label


def test_missing_dataset_names_the_variable_and_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_gtsrb("train", tmp_path / "nowhere")
    message = str(error.value)
    assert "GTSRB_ROOT" in message and "Training" in message and "download" in message


def test_root_comes_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GTSRB_ROOT", str(tmp_path))
    assert data.default_root() == tmp_path
    monkeypatch.delenv("GTSRB_ROOT")
    assert str(data.default_root()) == "data"


def test_imageset_validates_shapes():
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))  # float, not uint8
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))
