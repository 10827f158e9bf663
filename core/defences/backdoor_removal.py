"""Backdoor removal: defences that repair the classifier trained on the poisoned set (core.engine.registry.DEFENCES
entries with `after_training`). Anchors, BackdoorBench (CIFAR-10, PreAct-ResNet18, BadNets at 1%): attack success 1.48%
after fine-tuning on clean data, 0% after ABL, at 83-91% clean accuracy.

- fine_tune: fine-tune on the defender's trusted clean images (BackdoorBench's 'ft'): the trigger's features are
  not reinforced by clean data, and a moderate rate lets them decay.
- abl: Anti-Backdoor Learning (Li et al. 2021), which needs no clean data: backdoor images are learnt much faster
  than clean ones, so a model trained briefly with the local gradient ascent loss (LGA: the loss held near gamma for
  clean images, driven lower for the easy ones) isolates the lowest-loss share of the training set; the classifier
  trained on the whole set then unlearns them by gradient ascent of their loss (capped at chance and anchored by
  descent on the rest of the training set: see `unlearn`).
- abl_drop: ABL's isolation as a filter: drop the share of the training set a briefly LGA-trained model learns
  fastest and train the classifier from scratch on the rest (no unlearning, no clean data). Its share is a knob
  (default 10%: above a BadNets poison share of 5%, at the cost of about as many clean images; Li et al. isolate 1%
  for unlearning, which finds only a fifth of such poisons).
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from core.defences import DefenceConfig, DefenceContext
from core.engine.data import ImageSet
from core.engine.registry import DEFENCES, DefenceSpec, Knob
from core.engine.train import hard_label_loss, predict, to_float_images, train

LGA_GAMMA = 0.5  # Li et al.'s loss floor for the isolation model
ISOLATION_EPOCHS = 2  # passes with the LGA loss before isolating (Li et al.: 20 of 100 epochs; ours train 4 in all)
UNLEARN_BATCH = 64  # Li et al.'s batch size
FINE_TUNE_EPOCHS = Knob(
    "epochs", 10, "passes over the trusted clean images (BackdoorBench: 10%)", 1, 100, stored_as="fine_tune_epochs"
)
FINE_TUNE_LR = Knob("lr", 0.01, "peak learning rate (BackdoorBench's 0.01)", 0, 1, stored_as="fine_tune_lr")
ABL_ISOLATION = Knob(
    "isolation",
    0.01,
    "share of the training set isolated as likely poisons (Li et al.: 1%)",
    0,
    0.5,
    stored_as="abl_isolation",
)
# Li et al.: 5 to 20; see unlearn
ABL_UNLEARN_EPOCHS = Knob(
    "unlearn_epochs", 80, "passes over the isolated images", 1, 200, stored_as="abl_unlearn_epochs"
)
ABL_UNLEARN_LR = Knob(
    "unlearn_lr",
    0.01,
    "learning rate of the unlearning (Li et al.'s 5e-4 for plain ascent)",
    0,
    1,
    stored_as="abl_unlearn_lr",
)


def fine_tune(model: nn.Module, train_set: ImageSet, context: DefenceContext, config: DefenceConfig) -> nn.Module:
    """A copy of `model` trained further on the trusted clean images with the run's recipe at fine_tune_lr."""
    if context.trusted is None or context.train_config is None:
        raise ValueError("fine-tuning needs the defender's trusted images and the run's training recipe")
    tuned = copy.deepcopy(model)
    recipe = replace(
        context.train_config,
        epochs=config.knob("fine_tune", "epochs"),
        learning_rate=config.knob("fine_tune", "lr"),
        seed=config.seed,
    )
    train(tuned, context.trusted.images, context.trusted.labels, hard_label_loss(), recipe)
    return tuned


def lga_loss(gamma: float = LGA_GAMMA):
    """Li et al.'s local gradient ascent: sign(loss - gamma) * loss per image, so losses below gamma are pushed up."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        per_image = F.cross_entropy(logits, labels, reduction="none")
        return (torch.sign(per_image - gamma) * per_image).mean()

    return loss


def isolate(
    train_set: ImageSet, context: DefenceContext, config: DefenceConfig, share: float | None = None
) -> torch.Tensor:
    """Indices of the `share` (default abl_isolation) of the training set with the lowest loss under a briefly
    LGA-trained model: ABL's guess at the poisons."""
    if context.new_classifier is None or context.train_config is None:
        raise ValueError("ABL needs a fresh classifier and the run's training recipe")
    model = context.new_classifier()
    train(
        model,
        train_set.images,
        train_set.labels,
        lga_loss(),
        replace(context.train_config, epochs=ISOLATION_EPOCHS, seed=config.seed),
    )
    losses = F.cross_entropy(predict(model, train_set.images), train_set.labels, reduction="none")
    count = max(1, round((config.knob("abl", "isolation") if share is None else share) * len(train_set)))
    return losses.argsort()[:count]


def unlearn(model: nn.Module, isolated: ImageSet, rest: ImageSet, config: DefenceConfig) -> nn.Module:
    """A copy of `model` after abl_unlearn_epochs passes over the isolated images, each batch a step of gradient
    ascent of their loss, capped at chance (ln 43: no reward for pushing further), plus descent on a batch of the
    rest of the training set twice its size. Li et al.'s plain ascent (their 5e-4 x 20 passes) took our classifier
    from 91.3% to 5.5% clean on the compare preset (backdoor, seed 0); capped and anchored this way, 80 passes at
    0.01 left it at 91.8% with attack success 1.3% (issue 24's probe)."""
    torch.manual_seed(config.seed)  # dropout draws from the global generator: seeded, as core.engine.train.train does
    unlearned = copy.deepcopy(model).train()  # train mode, as Li et al.: in eval mode the saturated loss barely moves
    device = next(unlearned.parameters()).device
    optimizer = torch.optim.SGD(
        unlearned.parameters(), lr=config.knob("abl", "unlearn_lr"), momentum=0.9, weight_decay=5e-4
    )
    generator = torch.Generator().manual_seed(config.seed)
    cap = math.log(unlearned.head.out_features) if hasattr(unlearned, "head") else math.log(43)
    for _ in range(config.knob("abl", "unlearn_epochs")):
        order = torch.randperm(len(isolated), generator=generator)
        for start in range(0, len(isolated), UNLEARN_BATCH):
            index = order[start : start + UNLEARN_BATCH]
            kept = torch.randint(len(rest), (2 * len(index),), generator=generator)
            isolated_loss = F.cross_entropy(
                unlearned(to_float_images(isolated.images[index].to(device))),
                isolated.labels[index].to(device),
                reduction="none",
            )
            rest_loss = F.cross_entropy(
                unlearned(to_float_images(rest.images[kept].to(device))), rest.labels[kept].to(device)
            )
            loss = rest_loss - isolated_loss.clamp(max=cap).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return unlearned.eval()


def anti_backdoor_learning(
    model: nn.Module, train_set: ImageSet, context: DefenceContext, config: DefenceConfig
) -> nn.Module:
    isolated = isolate(train_set, context, config)
    rest = torch.ones(len(train_set), dtype=torch.bool)
    rest[isolated] = False
    return unlearn(model, train_set.subset(isolated), train_set.subset(torch.nonzero(rest).flatten()), config)


def without_the_fastest_learnt(train_set: ImageSet, context: DefenceContext, config: DefenceConfig) -> ImageSet:
    """The training set without the share ABL's isolation picks (abl_drop's knob `share`)."""
    isolated = isolate(train_set, context, config, share=config.knob("abl_drop", "share"))
    kept = torch.ones(len(train_set), dtype=torch.bool)
    kept[isolated] = False
    return train_set.subset(torch.nonzero(kept).flatten())


DROP_SHARE = Knob(
    "share", 0.1, "share of the training set dropped: the images a briefly LGA-trained model learns fastest", 0.001, 0.5
)

DEFENCES.register(
    DefenceSpec(
        "abl_drop",
        "ABL's isolation as a filter: drop what is learnt fastest, retrain",
        "Trains a model briefly with ABL's LGA loss, drops the share of training images it learns fastest (a "
        "backdoor's poisons are a shortcut, learnt first) and trains the classifier from scratch on the rest.",
        without_the_fastest_learnt,
        params=("seed",),
        knobs=(DROP_SHARE,),
    )
)
DEFENCES.register(
    DefenceSpec(
        "fine_tune",
        "Fine-tune on the trusted clean images",
        "Trains the classifier learnt on the poisoned set further on the defender's trusted clean images "
        "(fine_tune_epochs passes at fine_tune_lr), so what only the poisons taught it decays.",
        lambda train_set, context, config: train_set,
        params=("seed",),
        after_training=fine_tune,
        knobs=(FINE_TUNE_EPOCHS, FINE_TUNE_LR),
    )
)
DEFENCES.register(
    DefenceSpec(
        "abl",
        "Anti-backdoor learning (ABL), no clean data",
        "Isolates the abl_isolation share of training images a briefly trained model learns fastest (the poisons, "
        "if they are a shortcut), then makes the classifier learnt on the poisoned set unlearn them by gradient "
        "ascent (Li et al. 2021).",
        lambda train_set, context, config: train_set,
        params=("seed",),
        after_training=anti_backdoor_learning,
        knobs=(ABL_ISOLATION, ABL_UNLEARN_EPOCHS, ABL_UNLEARN_LR),
    )
)
