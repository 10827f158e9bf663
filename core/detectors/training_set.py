"""Backdoor detectors the field uses, which look at the training set itself through a model trained on it.

Spectral signatures (Tran et al. 2018) and activation clustering (Chen et al. 2018) need the features of a model
that learned the poisons: the undefended classifier trained on the poisoned training set (not the defender's clean
model, which never saw them). They are fitted on the training set they then score (fit_on="training"); each
image's class is the model's prediction for it, so the detectors need no labels at score time. BackdoorBench
reports both leave most of a BadNets attack in place on GTSRB.
"""

from __future__ import annotations

import torch
from torch import nn

from core.detectors.detect import DetectorContext, ScoreDetector, classifier_features
from core.engine.registry import DETECTORS, DetectorSpec
from core.engine.train import predict


class PerClassDetector(ScoreDetector):
    """Features and predicted class of each image under `model`; subclasses fit per-class statistics."""

    def __init__(self, model: nn.Module, device=None):
        super().__init__(device=device)
        self.model = model.eval()
        self.features = classifier_features(model)

    def _features_and_classes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(x).double(), predict(self.model, x).argmax(dim=1)


class SpectralSignatureDetector(PerClassDetector):
    """Score = squared projection of an image's centred features on the top singular vector of its class, divided by
    the class's mean such score on the fit set (so classes of different spread share one threshold)."""

    def fit(self, x_train: torch.Tensor) -> "SpectralSignatureDetector":
        features, classes = self._features_and_classes(x_train)
        n_classes, dim = int(self.model.config.num_classes), features.shape[1]
        self.means = torch.zeros(n_classes, dim, dtype=torch.float64)
        self.directions = torch.zeros(n_classes, dim, dtype=torch.float64)
        self.scales = torch.ones(n_classes, dtype=torch.float64)
        for c in classes.unique().tolist():
            members = features[classes == c]
            self.means[c] = members.mean(dim=0)
            if members.shape[0] < 2:
                continue
            _, _, vh = torch.linalg.svd(members - self.means[c], full_matrices=False)
            self.directions[c] = vh[0]
            self.scales[c] = (((members - self.means[c]) @ vh[0]) ** 2).mean().clamp_min(1e-12)
        return super().fit(x_train)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        features, classes = self._features_and_classes(x)
        projection = ((features - self.means[classes]) * self.directions[classes]).sum(dim=1)
        return (projection**2 / self.scales[classes]).float()


def two_means(points: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Lloyd's 2-means, started from the split at the sign of the first coordinate (the top principal component):
    deterministic, no seed. Returns the two centroids."""
    assign = points[:, 0] > 0
    centroids = torch.zeros(2, points.shape[1], dtype=points.dtype)
    for _ in range(iterations):
        for k in (0, 1):
            members = points[assign == bool(k)]
            if members.shape[0]:
                centroids[k] = members.mean(dim=0)
        assign = torch.cdist(points, centroids).argmin(dim=1).bool()
    return centroids


class ActivationClusteringDetector(PerClassDetector):
    """Per class: features projected on their top `components` principal components, split in two by 2-means. A
    backdoored class splits into its clean images and a small cluster of poisons. Score = (distance to the larger
    cluster - distance to the smaller) / the class's mean distance to the larger: high for images of the small one."""

    def __init__(self, model: nn.Module, components: int = 10, device=None):
        super().__init__(model, device)
        self.components = components
        self.stats: dict[int, tuple] = {}

    def fit(self, x_train: torch.Tensor) -> "ActivationClusteringDetector":
        features, classes = self._features_and_classes(x_train)
        for c in classes.unique().tolist():
            members = features[classes == c]
            if members.shape[0] < 3:
                continue
            mean = members.mean(dim=0)
            _, _, vh = torch.linalg.svd(members - mean, full_matrices=False)
            basis = vh[: self.components].T
            projected = (members - mean) @ basis
            centroids = two_means(projected)
            sizes = torch.bincount(torch.cdist(projected, centroids).argmin(dim=1), minlength=2)
            large, small = (0, 1) if sizes[0] >= sizes[1] else (1, 0)
            scale = torch.cdist(projected, centroids[large : large + 1]).mean().clamp_min(1e-12)
            self.stats[c] = (mean, basis, centroids[large], centroids[small], scale)
        return super().fit(x_train)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        features, classes = self._features_and_classes(x)
        scores = torch.zeros(x.shape[0], dtype=torch.float64)
        for c in classes.unique().tolist():
            if c not in self.stats:
                continue
            mean, basis, large, small, scale = self.stats[c]
            chosen = classes == c
            projected = (features[chosen] - mean) @ basis
            distance_large = (projected - large).norm(dim=1)
            distance_small = (projected - small).norm(dim=1)
            scores[chosen] = (distance_large - distance_small) / scale
        return scores.float()


def silhouette(points: torch.Tensor, assign: torch.Tensor) -> float:
    """Mean silhouette of a two-cluster split (Rousseeuw 1987): per point (b - a) / max(a, b), a its mean distance
    to its own cluster, b to the other; 0 when a cluster is empty or a singleton."""
    sizes = torch.bincount(assign.long(), minlength=2)
    if int(sizes.min()) < 2:
        return 0.0
    distances = torch.cdist(points, points)
    same = assign[:, None] == assign[None, :]
    own = (distances * same).sum(1) / (same.sum(1) - 1)
    other = (distances * ~same).sum(1) / (~same).sum(1)
    return float(((other - own) / torch.maximum(own, other).clamp_min(1e-12)).mean())


class ActivationClusteringRule(ActivationClusteringDetector):
    """Activation clustering with its authors' decision rule (Chen et al. 2018, as IBM's Adversarial Robustness
    Toolbox implements it): a class's 2-means split is trusted only when its silhouette exceeds SILHOUETTE_THRESHOLD,
    and then the cluster holding less than SIZE_THRESHOLD of the class is flagged. Score > 1 for flagged images
    (ordered by how far inside their cluster), 0 for the rest: a decision first, a ranking only within it. When the
    poisons are the larger cluster (the 60 km/h backdoor here), it flags nothing rather than the clean images."""

    SIZE_THRESHOLD = 0.35  # ART's default size_threshold
    SILHOUETTE_THRESHOLD = 0.1  # ART's default silhouette_threshold
    MAX_SILHOUETTE_POINTS = 2000  # pairwise distances of a larger class are computed on an evenly spaced sample

    def fit(self, x_train: torch.Tensor) -> "ActivationClusteringRule":
        self.flagged_cluster: dict[int, int | None] = {}  # class -> 1 (its smaller cluster flagged) or None
        super().fit(x_train)  # the per-class 2-means split
        features, classes = self._features_and_classes(x_train)
        for c, (mean, basis, large, small, _) in self.stats.items():
            projected = (features[classes == c] - mean) @ basis
            assign = torch.cdist(projected, torch.stack([large, small])).argmin(dim=1)  # 1: the smaller cluster
            step = max(1, projected.shape[0] // self.MAX_SILHOUETTE_POINTS)
            score = silhouette(projected[::step], assign[::step])
            share = float(assign.float().mean())
            self.flagged_cluster[c] = 1 if score > self.SILHOUETTE_THRESHOLD and share < self.SIZE_THRESHOLD else None
        return ScoreDetector.fit(self, x_train)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        features, classes = self._features_and_classes(x)
        scores = torch.zeros(x.shape[0])
        for c, flagged in self.flagged_cluster.items():
            chosen = classes == c
            if flagged is None or not chosen.any():
                continue
            mean, basis, large, small, scale = self.stats[c]
            projected = (features[chosen] - mean) @ basis
            distances = torch.cdist(projected, torch.stack([large, small]))
            in_flagged = (distances.argmin(dim=1) == flagged).float()
            # 1 + a tie-break in (0, 1) by how far inside the flagged cluster: a drop budget smaller than what the
            # rule flags takes the clearest cases first
            closeness = torch.sigmoid((distances[:, 0] - distances[:, 1]) / scale).float()
            scores[chosen] = in_flagged * (1 + closeness)
        return scores


def _poisoned_model(context: DetectorContext) -> nn.Module:
    if context.poisoned_model is None:
        raise ValueError("this detector needs a model trained on the poisoned training set; none was given")
    return context.poisoned_model()


DETECTORS.register(
    DetectorSpec(
        "spectral_signatures",
        "Spectral signatures (model trained on the poisoned set)",
        lambda context: SpectralSignatureDetector(_poisoned_model(context)),
        fit_on="training",
    )
)
DETECTORS.register(
    DetectorSpec(
        "activation_clustering",
        "Activation clustering (model trained on the poisoned set)",
        lambda context: ActivationClusteringDetector(_poisoned_model(context)),
        fit_on="training",
    )
)
DETECTORS.register(
    DetectorSpec(
        "activation_clustering_rule",
        "Activation clustering, its authors' rule (relative size and silhouette)",
        lambda context: ActivationClusteringRule(_poisoned_model(context)),
        fit_on="training",
    )
)
