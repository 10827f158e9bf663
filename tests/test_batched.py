"""The batched trainer against K sequential trainings: the same weights, within float tolerance, on CPU."""

import copy

import pytest
import torch

from core.engine.batched import train_batched
from core.engine.models import Classifier, ClassifierConfig
from core.engine.train import TrainConfig, hard_label_loss, soft_label_loss, train


def test_batched_training_gives_the_weights_of_k_sequential_trainings():
    """In float64. In float32 the two paths round differently (train() runs channels-last, vmap contiguous) and a
    near-tie in max pooling can route a gradient elsewhere: weights then differ by up to 1e-2 after a few steps for
    some initialisations, exactly as train() differs from itself between the two memory formats (measured). In
    float64 neither happens, so this compares the batching itself."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (120, 3, 32, 32), dtype=torch.uint8, generator=generator).double() / 255
    labels = torch.randint(0, 5, (120,), generator=generator)
    # three models, three different subsets (the sweep's kept sets), three seeds; batches of 8 and 9 steps: the
    # 20-image model starts a new pass every 2 steps, the 45-image one after 5, the 120-image one never
    subsets = [torch.arange(120), torch.randperm(120, generator=generator)[:45], torch.arange(40, 60)]
    configs = [TrainConfig(epochs=1, batch_size=8, augment=True, seed=seed) for seed in (3, 4, 5)]
    model_config = ClassifierConfig(num_classes=5, width=4, hidden=16, dropout=0.0)
    models = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        models.append(Classifier(model_config).double())
    steps = 9

    batched = train_batched(
        models, images, [labels[s] for s in subsets], subsets, hard_label_loss(), configs, steps, torch.device("cpu")
    )
    for model, subset, config, result in zip(models, subsets, configs, batched):
        alone = copy.deepcopy(model)
        train(alone, images[subset], labels[subset], hard_label_loss(), config, torch.device("cpu"), steps=steps)
        assert not torch.equal(alone.head.weight, model.head.weight)  # both trained
        for (name, expected), actual in zip(alone.state_dict().items(), result.state_dict().values()):
            assert torch.allclose(expected.double(), actual.double(), atol=1e-9, rtol=1e-9), name
    # the K models did not all learn the same thing
    assert not torch.allclose(batched[0].head.weight, batched[1].head.weight)


def test_batched_training_takes_soft_labels_and_rejects_mixed_settings():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    soft = torch.softmax(torch.randn(32, 5), dim=1)
    model = Classifier(ClassifierConfig(num_classes=5, width=4, hidden=8, dropout=0.0))
    subset = torch.arange(32)
    trained = train_batched(
        [model], images, [soft], [subset], soft_label_loss(5.0), [TrainConfig(batch_size=16)], 2, torch.device("cpu")
    )
    assert not torch.equal(trained[0].head.weight, model.head.weight)
    with pytest.raises(ValueError, match="share every training setting"):
        train_batched(
            [model, model],
            images,
            [soft, soft],
            [subset, subset],
            soft_label_loss(5.0),
            [TrainConfig(batch_size=16), TrainConfig(batch_size=8)],
            2,
        )
