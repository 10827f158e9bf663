import pytest
import torch

from core.engine.models import AutoencoderConfig, Classifier, ClassifierConfig, DenoisingAutoencoder
from core.engine.train import (
    RECIPE_3_DEFAULTS,
    TrainConfig,
    TrainingCancelled,
    hard_label_loss,
    random_translate,
    reconstruction_loss,
    soft_label_loss,
    train,
)
from core.experiments.evaluate import accuracy


def test_small_classifier_learns_gtsrb_on_cpu(small_splits):
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(width=24))  # the project's classifier, on a quarter of the train split
    events = []
    losses = train(
        model,
        small_splits.train.images,
        small_splits.train.labels,
        hard_label_loss(),
        TrainConfig(epochs=4, learning_rate=0.05, augment=True, seed=0),
        device=torch.device("cpu"),
        progress=events.append,
    )
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert events[-1].step == events[-1].total_steps and events[-1].epoch_loss is not None
    assert accuracy(model, small_splits.test.images, small_splits.test.labels) > 0.90


def test_training_is_reproducible_with_a_seed():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 43, (64,), generator=generator)
    weights = []
    for _ in range(2):
        torch.manual_seed(1)
        model = Classifier(ClassifierConfig(width=4, hidden=16))
        train(
            model,
            images,
            labels,
            hard_label_loss(),
            TrainConfig(epochs=2, batch_size=16, augment=True, seed=3),
            device=torch.device("cpu"),
        )
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_cancel_stops_and_restores_mode():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    model = Classifier(ClassifierConfig(width=4, hidden=16)).eval()
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(TrainingCancelled):
        train(
            model,
            images,
            torch.zeros(64, dtype=torch.long),
            hard_label_loss(),
            TrainConfig(epochs=5, batch_size=8),
            device=torch.device("cpu"),
            should_stop=stop,
        )
    assert len(calls) == 3 and not model.training


def test_autoencoder_trains_through_the_same_loop():
    images = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8)
    model = DenoisingAutoencoder(AutoencoderConfig(depth=2, width=8, latent_dim=16))
    losses = train(
        model,
        images,
        images,
        reconstruction_loss,
        TrainConfig(epochs=3, batch_size=32, optimizer="adam", learning_rate=1e-2, weight_decay=0),
        device=torch.device("cpu"),
    )
    assert losses[-1] < losses[0]
    output = model(images[:2].float() / 255)
    assert output.shape == (2, 3, 32, 32) and output.min() >= 0 and output.max() <= 1


def test_temperature_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    label = torch.tensor([0])
    T = 5.0
    expected_hard = -T * torch.log_softmax(logits / T, dim=1)[0, 0]
    assert torch.isclose(hard_label_loss(T)(logits, label), expected_hard)
    soft = torch.softmax(logits / T, dim=1)
    # cross-entropy of a distribution with itself is its entropy
    entropy = -(soft * soft.log()).sum()
    assert torch.isclose(soft_label_loss(T)(logits, soft), T * entropy)
    # the gradient w.r.t. the logits is softmax(logits / T) - target, as at T = 1
    logits.requires_grad_(True)
    hard_label_loss(T)(logits, label).backward()
    assert torch.allclose(logits.grad, soft - torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6)
    with pytest.raises(ValueError):
        soft_label_loss(0.0)


def test_random_translate_shifts_within_two_pixels():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 4, 4] = 1.0
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        shifted = random_translate(image.expand(3, 1, 8, 8).contiguous(), 2, generator)
        for one in shifted:
            row, col = divmod(int(one.flatten().argmax()), 8)
            assert abs(row - 4) <= 2 and abs(col - 4) <= 2 and one.sum() == 1


def test_config_validation():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")


def test_an_epochs_last_partial_batch_is_skipped():
    """35 = 2 x 16 + 3 samples: two full batches per epoch, never the 3-sample one (it ruined batch-norm statistics:
    students lost 30-50 points), while a fresh permutation each epoch still shows every sample."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (35, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.arange(35)
    seen_sizes, seen_labels, events = [], set(), []
    loss = hard_label_loss()

    def recording_loss(logits, targets):
        seen_sizes.append(int(targets.shape[0]))
        seen_labels.update(targets.tolist())
        return loss(logits, targets % 43)

    model = Classifier(ClassifierConfig(width=4, hidden=16))
    train(
        model,
        images,
        labels,
        recording_loss,
        TrainConfig(epochs=6, batch_size=16, seed=0),
        device=torch.device("cpu"),
        progress=events.append,
    )
    assert seen_sizes == [16] * 12 and events[-1].total_steps == 12
    assert len(seen_labels) > 32  # every epoch draws a new permutation, so the skipped samples differ


def test_recipe_3_knobs_leave_recipe_2_keys_alone_and_change_training():
    """The new knobs at their defaults add nothing to a stored config (old cache keys hold); set, they appear in
    the key and change what is learned; EMA is deterministic for a seed."""
    plain = TrainConfig(epochs=2, batch_size=16, seed=1)
    assert set(plain.to_dict()) == {f for f in TrainConfig.__dataclass_fields__} - set(RECIPE_3_DEFAULTS)
    smoothed = TrainConfig(epochs=2, batch_size=16, seed=1, label_smoothing=0.1, ema_decay=0.9, warmup_share=0.1)
    assert smoothed.to_dict()["ema_decay"] == 0.9 and TrainConfig.from_dict(smoothed.to_dict()) == smoothed
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 4, (64,), generator=generator)

    def weights(config):
        torch.manual_seed(0)
        model = Classifier(ClassifierConfig(num_classes=4, width=4, hidden=8))
        train(model, images, labels, hard_label_loss(1.0, config.label_smoothing), config, torch.device("cpu"))
        return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])

    assert torch.equal(weights(smoothed), weights(smoothed))
    assert not torch.allclose(weights(smoothed), weights(plain))
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=-0.1)


def test_per_image_normalisation_ignores_an_image_s_brightness_and_contrast():
    """input_norm="image": an image and a dimmer, lower-contrast copy of it (a * x + b) give the same logits; the
    dataset normalisation does not; configs that keep the default store no input_norm (old keys hold)."""
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 0.5 + 0.25
    dimmer = 0.4 * x + 0.05
    per_image = Classifier(ClassifierConfig(num_classes=5, width=4, hidden=8, input_norm="image")).eval()
    torch.manual_seed(0)
    per_dataset = Classifier(ClassifierConfig(num_classes=5, width=4, hidden=8)).eval()
    with torch.no_grad():
        image_change = (per_image(x) - per_image(dimmer)).abs().max()
        dataset_change = (per_dataset(x) - per_dataset(dimmer)).abs().max()
    assert image_change < 1e-4 and dataset_change > 100 * image_change
    assert "input_norm" not in ClassifierConfig().to_dict()
    assert ClassifierConfig(input_norm="image").to_dict()["input_norm"] == "image"
    with pytest.raises(ValueError, match="input_norm"):
        ClassifierConfig(input_norm="batch")


def test_denoising_pairs_report_progress_and_are_the_same_in_chunks():
    """The Autoencoder page crafts the defender's copies in chunks with a bar (it showed a spinner for minutes): the
    chunked FGSM / I-FGSM copies are exactly the unchunked ones, and progress reaches the total for each attack."""
    from core.detectors.dae import DAEConfig, denoising_pairs
    from core.engine.data import ImageSet

    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(width=4, hidden=16)).eval()
    trusted = ImageSet(torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 43, (70,)))
    config = DAEConfig(eps=8 / 255, alpha=2 / 255, steps=3)
    reports = []
    chunked = denoising_pairs(trusted, model, config, lambda stage, done, total: reports.append((stage, done)), 32)
    whole = denoising_pairs(trusted, model, config)
    assert all(torch.equal(a, b) for a, b in zip(chunked, whole))
    for attack in config.defender_attacks:
        done = [count for stage, count in reports if stage == f"crafting the defender's {attack} copies"]
        assert done == [0, 32, 64, 70], (attack, done)


def test_model_bytes_is_a_safetensors_file_of_the_weights():
    from safetensors.torch import load

    from core.engine.storage import model_bytes

    model = DenoisingAutoencoder(AutoencoderConfig(depth=2, width=8, latent_dim=16))
    weights = load(model_bytes(model))
    assert set(weights) == set(model.state_dict())
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())
