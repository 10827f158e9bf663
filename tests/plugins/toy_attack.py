"""A toy attack in one file, as README's "Extending" describes: a function and one register call."""

import torch

from core.registry import ATTACKS, AttackSpec


def random_sign(model, x, y, eps, alpha, steps, generator=None):
    """Move every pixel by +-eps at random (the model is not even asked)."""
    signs = torch.randint(0, 2, x.shape, generator=generator or torch.Generator().manual_seed(0)).to(x) * 2 - 1
    return (x + eps * signs).clamp(0, 1)


SPEC = ATTACKS.register(AttackSpec("toy_random_sign", "Toy: random signs", random_sign, iterative=False))
