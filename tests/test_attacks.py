import pytest
import torch
import torch.nn.functional as F

from core.attacks import fgsm, ifgsm, pgd


def _batch(n=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.randint(0, 43, (n,), generator=generator)


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "pgd"])
def test_stays_in_eps_ball_and_pixel_range(tiny_model, attack):
    x, y = _batch()
    eps = 8 / 255
    run = {
        "fgsm": lambda: fgsm(tiny_model, x, y, eps),
        "ifgsm": lambda: ifgsm(tiny_model, x, y, eps, 2 / 255, 7),
        "pgd": lambda: pgd(tiny_model, x, y, eps, 2 / 255, 7),
    }[attack]
    x_adv = run()
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 0


def test_one_ifgsm_step_with_alpha_eps_equals_fgsm(tiny_model):
    x, y = _batch()
    assert torch.equal(ifgsm(tiny_model, x, y, 0.03, 0.03, 1), fgsm(tiny_model, x, y, 0.03))


def test_attacks_raise_the_loss(small_classifier, small_splits):
    x = small_splits.test.images[:256].float() / 255
    y = small_splits.test.labels[:256]

    def loss(images):
        with torch.no_grad():
            return F.cross_entropy(small_classifier(images), y).item()

    clean = loss(x)
    one_step = loss(fgsm(small_classifier, x, y, 0.03))
    iterated = loss(ifgsm(small_classifier, x, y, 0.03, 0.005, 10))
    assert one_step > clean and iterated > clean
    assert iterated > one_step  # the iterative attack is the stronger one at the same eps


@pytest.mark.parametrize("start_training", [True, False])
def test_model_mode_is_restored(tiny_model, start_training):
    x, y = _batch(4)
    tiny_model.train(start_training)
    seen = []
    hook = tiny_model.register_forward_pre_hook(lambda module, inputs: seen.append(module.training))
    for run in (
        lambda: fgsm(tiny_model, x, y, 0.01),
        lambda: ifgsm(tiny_model, x, y, 0.01, 0.005, 2),
        lambda: pgd(tiny_model, x, y, 0.01, 0.005, 2),
    ):
        run()
        assert tiny_model.training == start_training
    hook.remove()
    assert seen and not any(seen)  # eval mode during every forward of every attack


def test_matches_torchattacks_to_float_precision(tiny_model):
    import torchattacks  # installed by the Makefile; a missing one fails, never skips

    x, y = _batch(32, seed=1)
    ours_fgsm = fgsm(tiny_model, x, y, 0.03)
    theirs_fgsm = torchattacks.FGSM(tiny_model, eps=0.03)(x, y)
    assert torch.allclose(ours_fgsm, theirs_fgsm, atol=1e-6)
    ours_bim = ifgsm(tiny_model, x, y, 0.03, 0.01, 5)
    theirs_bim = torchattacks.BIM(tiny_model, eps=0.03, alpha=0.01, steps=5)(x, y)
    assert torch.allclose(ours_bim, theirs_bim, atol=1e-6)


def test_result_does_not_depend_on_batching(tiny_model):
    x, y = _batch(20)
    assert torch.equal(ifgsm(tiny_model, x, y, 0.03, 0.01, 3, batch_size=7), ifgsm(tiny_model, x, y, 0.03, 0.01, 3))


def test_pgd_random_start_is_seeded(tiny_model):
    x, y = _batch(8)
    a = pgd(tiny_model, x, y, 0.03, 0.01, 2, generator=torch.Generator().manual_seed(1))
    b = pgd(tiny_model, x, y, 0.03, 0.01, 2, generator=torch.Generator().manual_seed(1))
    c = pgd(tiny_model, x, y, 0.03, 0.01, 2, random_start=False)
    assert torch.equal(a, b) and torch.equal(c, ifgsm(tiny_model, x, y, 0.03, 0.01, 2))


def test_bad_parameters_raise(tiny_model):
    x, y = _batch(2)
    with pytest.raises(ValueError, match="eps"):
        fgsm(tiny_model, x, y, -0.1)
    with pytest.raises(ValueError, match="steps"):
        ifgsm(tiny_model, x, y, 0.1, 0.01, 0)
    with pytest.raises(TypeError, match="float"):
        fgsm(tiny_model, (x * 255).to(torch.uint8), y, 0.1)


def test_margin_loss_beats_gradient_masking(saturated_classifier, small_splits):
    from core.attacks import cross_entropy_loss, margin_loss, scaled_logits, zero_gradient_fraction

    x = small_splits.test.images[:200].float() / 255
    masked = saturated_classifier
    with torch.no_grad():
        y = masked(x).argmax(dim=1)  # attack the model's own (correct by definition) predictions
    assert zero_gradient_fraction(masked, x, y) > 0.5  # softmax saturated: cross-entropy gradients vanish
    plain = fgsm(masked, x, y, 0.05)
    adaptive = fgsm(masked, x, y, 0.05, loss=margin_loss)
    rescaled = fgsm(masked, x, y, 0.05, loss=scaled_logits(cross_entropy_loss, 1e3))
    with torch.no_grad():
        plain_acc = (masked(plain).argmax(1) == y).float().mean()
        adaptive_acc = (masked(adaptive).argmax(1) == y).float().mean()
        rescaled_acc = (masked(rescaled).argmax(1) == y).float().mean()
    assert adaptive_acc < plain_acc and rescaled_acc < plain_acc
    assert zero_gradient_fraction(masked, x, y, loss=margin_loss) == 0.0
