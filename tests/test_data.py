import numpy as np
import pytest
import torch

from core.engine import data
from core.engine.data import (
    CLASS_NAMES,
    NUM_CLASSES,
    DatasetNotFoundError,
    ImageSet,
    load_gtsrb,
    load_splits,
    stratified_split,
)


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


def test_cache_round_trips_and_a_corrupt_one_is_moved_aside(gtsrb_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAE_DISTILL_CACHE", str(tmp_path))
    first = load_gtsrb("test", gtsrb_root)
    cached = list(tmp_path.glob("gtsrb-test-*.safetensors"))
    assert len(cached) == 1
    second = load_gtsrb("test", gtsrb_root)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    # a corrupt cache file is kept aside (evidence of a crash), said on stderr, and rebuilt rather than trusted
    cached[0].write_bytes(b"not a safetensors file")
    third = load_gtsrb("test", gtsrb_root)
    assert torch.equal(first.images, third.images)
    assert "moved aside" in capsys.readouterr().err
    assert [path.read_bytes() for path in tmp_path.glob("gtsrb-test-*.corrupt-*")] == [b"not a safetensors file"]


def make_gtsrb_root(root, size=None, seed=0, per_class=2, classes=3):
    """A GTSRB folder in torchvision's layout with random images: full-size (per-image sizes around 40-60 px)
    or, with size=32, the same pictures pre-resized by another tool (Pillow's box filter)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pictures = []
    for split in ("train", "test"):
        for label in range(classes):
            for number in range(per_class):
                height, width = rng.integers(38, 64, size=2)
                pictures.append((split, label, number, rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for split, label, number, pixels in pictures:
        image = Image.fromarray(pixels)
        if size is not None:
            image = image.resize((size, size), Image.BOX)
        if split == "train":
            folder = root / "gtsrb" / "GTSRB" / "Training" / f"{label:05d}"
            name = f"{label:05d}_{number:05d}.ppm"
        else:
            folder = root / "gtsrb" / "GTSRB" / "Final_Test" / "Images"
            name = f"{label:02d}{number:03d}.ppm"
            rows.append(f"{name};{image.width};{image.height};0;0;{image.width};{image.height};{label}")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / name)
    (root / "gtsrb" / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return pictures


def test_full_size_images_are_resized_bilinearly(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("DAE_DISTILL_CACHE", str(tmp_path / "cache"))
    pictures = make_gtsrb_root(tmp_path / "full")
    train = load_gtsrb("train", tmp_path / "full")
    originals = [pixels for split, _, _, pixels in pictures if split == "train"]
    assert len(train) == len(originals) and all(p.shape[0] != 32 for p in originals)
    for index, pixels in enumerate(originals):
        expected = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1)
        assert np.array_equal(train.images[index].numpy(), expected), index
        bicubic = np.asarray(Image.fromarray(pixels).resize((32, 32))).transpose(2, 0, 1)  # Pillow's default
        assert not np.array_equal(train.images[index].numpy(), bicubic)  # so the test can tell the two apart


def test_full_size_and_pre_resized_roots_do_not_share_cache_entries(tmp_path, monkeypatch):
    from core.engine.storage import config_hash
    from core.experiments.pipeline import ModelCache, _data_and_classifiers, preset

    monkeypatch.setenv("DAE_DISTILL_CACHE", str(tmp_path / "cache"))
    make_gtsrb_root(tmp_path / "full", per_class=4)
    make_gtsrb_root(tmp_path / "small", size=32, per_class=4)
    keys = []
    for root in ("full", "small"):
        _, data_key, _ = _data_and_classifiers(
            preset("paper"), ModelCache(tmp_path / "models"), tmp_path / root, lambda *args: None, None, False
        )
        keys.append(data_key)
    assert keys[0]["train"] != keys[1]["train"] and config_hash(keys[0]) != config_hash(keys[1])
    assert len(list((tmp_path / "cache").glob("gtsrb-train-*.safetensors"))) == 2  # decoded separately too


def test_cache_keys_change_with_the_recipe(monkeypatch):
    from core.engine import recipe
    from core.engine.storage import config_hash

    before = config_hash(recipe.recipe_key("classifier"))
    monkeypatch.setitem(recipe.RECIPE_VERSIONS, "classifier", recipe.RECIPE_VERSIONS["classifier"] + 1)
    assert config_hash(recipe.recipe_key("classifier")) != before
    monkeypatch.setenv("DAE_DISTILL_DEVICE", "meta")  # another device type is another key, too
    monkeypatch.setitem(recipe.RECIPE_VERSIONS, "classifier", recipe.RECIPE_VERSIONS["classifier"] - 1)
    assert config_hash(recipe.recipe_key("classifier")) != before


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
