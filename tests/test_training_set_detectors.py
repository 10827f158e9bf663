"""Spectral signatures and activation clustering find a backdoor's poisons on a toy set where the model's features
separate them (and, like the paper's detectors, know nothing of the poison mask)."""

from types import SimpleNamespace

import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from core.detectors.training_set import ActivationClusteringDetector, SpectralSignatureDetector, two_means


class PatchAwareModel(nn.Module):
    """Features: each channel's mean and the bottom-right 3x3 patch's mean; class: is the red channel bright."""

    config = SimpleNamespace(num_classes=2)

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # predict() finds the device through a parameter

    def embed(self, x):
        channels = x.mean(dim=(2, 3))
        patch = x[:, :, -3:, -3:].mean(dim=(1, 2, 3))[:, None]
        return torch.cat([channels, patch], dim=1) + self.anchor

    def forward(self, x):
        red = x[:, 0].mean(dim=(1, 2)) - 0.5
        return torch.stack([-red, red], dim=1) * 10


def backdoored_set(n: int = 400, seed: int = 0):
    """Half the images have a bright red channel (class 1); a tenth of those carry a white 3x3 trigger."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=generator) * 0.5
    images[: n // 2, 0] += 0.5
    poisoned = torch.zeros(n, dtype=torch.bool)
    poisoned[: n // 20] = True
    images[poisoned, :, -3:, -3:] = 1.0
    return (images * 255).round().to(torch.uint8), poisoned


def test_both_detectors_rank_the_triggered_images_first():
    images, poisoned = backdoored_set()
    for detector in (SpectralSignatureDetector(PatchAwareModel()), ActivationClusteringDetector(PatchAwareModel())):
        scores = detector.fit(images).score(images)
        auc = roc_auc_score(poisoned.numpy(), scores.numpy())
        assert auc > 0.95, (type(detector).__name__, auc)


def test_two_means_splits_two_blobs():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(50, 3, generator=generator) - 5, torch.randn(10, 3, generator=generator) + 5])
    centroids = two_means(points.double())
    assert sorted(round(float(c.mean())) for c in centroids) == [-5, 5]


def test_the_authors_rule_flags_a_small_separated_cluster_and_nothing_when_poisons_are_the_majority():
    from core.detectors.training_set import ActivationClusteringRule, silhouette

    images, poisoned = backdoored_set()  # 20 of class 1's 200 images triggered: a small, well separated cluster
    scores = ActivationClusteringRule(PatchAwareModel()).fit(images).score(images)
    assert torch.equal(scores >= 1, poisoned) and torch.equal(scores > 0, poisoned)  # exactly the triggered images
    # 120 of class 1's 200 triggered: the poisons are the larger cluster, the clean 40% is above the 35% size rule
    images[:120, :, -3:, -3:] = 255
    majority = torch.zeros(400, dtype=torch.bool)
    majority[:120] = True
    rule_scores = ActivationClusteringRule(PatchAwareModel()).fit(images).score(images)
    assert rule_scores.sum() == 0  # the rule flags nothing
    plain = ActivationClusteringDetector(PatchAwareModel()).fit(images).score(images)
    assert roc_auc_score(majority.numpy(), plain.numpy()) < 0.1  # "the smaller cluster" points at the clean images
    # the silhouette of two far blobs is near 1, of one blob cut in half far lower
    generator = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(40, 2, generator=generator), torch.randn(40, 2, generator=generator) + 20])
    assert silhouette(blobs, torch.arange(80) >= 40) > 0.9
    one = torch.randn(80, 2, generator=generator)
    assert silhouette(one, one[:, 0] > 0) < 0.6
