import pytest
import torch

from core.engine.data import ImageSet
from core.threats.poison import (
    PoisonConfig,
    choose_poison_indices,
    poison_training_set,
    quantise_toward,
    threat_metrics,
)


@pytest.fixture
def random_set():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (200, 3, 32, 32), generator=generator, dtype=torch.uint8)
    return ImageSet(images, torch.randint(0, 43, (200,), generator=generator))


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm"])
@pytest.mark.parametrize("fraction", [0.0, 0.137, 0.5, 1.0])
def test_poisons_exactly_the_chosen_samples(tiny_model, random_set, attack, fraction):
    config = PoisonConfig(attack=attack, eps=0.03, alpha=0.01, steps=3, fraction=fraction, seed=1)
    poisoned = poison_training_set(random_set, tiny_model, config)
    assert poisoned.n_poisoned == round(fraction * 200)
    changed = (poisoned.data.images != random_set.images).flatten(1).any(dim=1)
    assert not changed[~poisoned.poison_mask].any()  # only chosen samples change
    if fraction > 0:
        assert changed[poisoned.poison_mask].float().mean() > 0.9  # and (almost all of) those do
    assert poisoned.data.images.dtype == torch.uint8
    difference = (poisoned.data.images.int() - random_set.images.int()).abs()
    assert difference.max() <= int(0.03 * 255)  # within eps after rounding: 7 grey levels
    assert torch.equal(poisoned.data.labels, random_set.labels)  # labels untouched


def test_paper_eps_moves_pixels_by_at_most_two_levels(tiny_model, random_set):
    poisoned = poison_training_set(random_set, tiny_model, PoisonConfig(attack="fgsm", eps=0.01, fraction=1.0))
    difference = (poisoned.data.images.int() - random_set.images.int()).abs()
    assert difference.max() == 2  # 0.01 * 255 = 2.55 levels, rounded toward the original


def test_quantisation_rounds_toward_the_original():
    original = torch.tensor([10, 10, 10, 0, 255], dtype=torch.uint8)
    adversarial = torch.tensor([12.9, 7.1, 10.4, 0.0, 250.0]) / 255
    assert quantise_toward(original, adversarial, eps=3 / 255).tolist() == [12, 8, 10, 0, 252]  # last: capped at eps
    # float noise just below a whole level does not lose the level; the eps cap holds
    assert quantise_toward(
        torch.tensor([100], dtype=torch.uint8), torch.tensor([102.99999]) / 255, 3 / 255
    ).tolist() == [103]
    assert quantise_toward(torch.tensor([100], dtype=torch.uint8), torch.tensor([110.0]) / 255, 3 / 255).tolist() == [
        103
    ]


def test_choice_is_seeded_and_exact():
    a, b = choose_poison_indices(1000, 0.1234, 5), choose_poison_indices(1000, 0.1234, 5)
    assert torch.equal(a, b) and len(a) == 123 and len(set(a.tolist())) == 123
    assert not torch.equal(a, choose_poison_indices(1000, 0.1234, 6))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -0.01}, "eps"),
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": -0.1}, "fraction"),
        ({"steps": 0}, "steps"),
        ({"attack": "cw"}, "attack"),
        ({"alpha": -1}, "alpha"),
        ({"knobs": {"backdoor.trigger_size": 17}}, "trigger_size"),  # a stored knob checks its range as any knob
        ({"knobs": {"tap.smooth_scale": 3}}, "smooth_scale"),
        ({"knobs": {"unlearnable.noise_scope": "pixelwise"}}, "noise_scope"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PoisonConfig(**kwargs)


def test_label_flip_relabels_exactly_the_chosen_share_of_the_source_class(random_set):
    config = PoisonConfig(threat="label_flip", source_class=5, target_class=7, fraction=0.5, seed=3)
    poisoned = poison_training_set(random_set, None, config)
    source = random_set.labels == 5
    assert poisoned.n_poisoned == round(0.5 * int(source.sum()))
    assert not poisoned.poison_mask[~source].any()  # only the source class is touched
    assert (poisoned.data.labels[poisoned.poison_mask] == 7).all()
    assert torch.equal(poisoned.data.labels[~poisoned.poison_mask], random_set.labels[~poisoned.poison_mask])
    assert torch.equal(poisoned.data.images, random_set.images)  # images untouched


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.33])
def test_backdoor_stamps_exactly_the_patch_and_relabels_exactly_the_fraction(random_set, fraction):
    config = PoisonConfig(threat="backdoor", target_class=0, fraction=fraction, seed=2)  # a 3-pixel trigger
    poisoned = poison_training_set(random_set, None, config)
    eligible = random_set.labels != 0
    assert poisoned.n_poisoned == round(fraction * int(eligible.sum()))
    assert not poisoned.poison_mask[~eligible].any()  # never a target-class image
    mask = poisoned.poison_mask
    assert (poisoned.data.labels[mask] == 0).all()
    assert torch.equal(poisoned.data.labels[~mask], random_set.labels[~mask])
    assert torch.equal(poisoned.data.images[~mask], random_set.images[~mask])
    # Inside the 3x3 window one pixel from the bottom-right corner: the checkerboard; outside it: unchanged.
    window = (slice(None), slice(None), slice(28, 31), slice(28, 31))
    expected = torch.tensor([[255, 0, 255], [0, 255, 0], [255, 0, 255]], dtype=torch.uint8)
    assert (poisoned.data.images[mask][window] == expected).all()
    outside = poisoned.data.images[mask].clone()
    outside[window] = random_set.images[mask][window]
    assert torch.equal(outside, random_set.images[mask])


def test_threat_metrics_measure_attack_success(random_set):
    class AlwaysTarget(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(43))

        def forward(self, x):
            return self.bias.expand(x.shape[0], 43) + torch.nn.functional.one_hot(torch.tensor(7), 43).float()

    model = AlwaysTarget()
    backdoor = threat_metrics(model, random_set, PoisonConfig(threat="backdoor", target_class=7))
    assert backdoor["attack_success_rate"] == 1.0
    assert backdoor["n_asr_test"] == int((random_set.labels != 7).sum())
    assert (
        threat_metrics(model, random_set, PoisonConfig(threat="backdoor", target_class=8))["attack_success_rate"] == 0.0
    )
    assert threat_metrics(model, random_set, PoisonConfig()) == {}


def test_threat_configs_reject_nonsense():
    with pytest.raises(ValueError, match="unknown threat model .gradient_matching.: choose one of perturbation"):
        PoisonConfig(threat="gradient_matching")
    with pytest.raises(ValueError, match="different from the target"):
        PoisonConfig(threat="label_flip", source_class=3, target_class=3)
    with pytest.raises(ValueError, match="0..42"):
        PoisonConfig(threat="backdoor", target_class=43)
    with pytest.raises(ValueError, match="surrogate"):
        poison_training_set(
            ImageSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)),
            None,
            PoisonConfig(),
        )
