"""A toy attack in one file, as README's "Extending" describes: a function and one register call. Its knob `share`
(of the pixels moved) is a keyword argument of the function, declared in the spec: PoisonConfig's value, the flag
--toy-random-sign-share and the Poison page's widget come from it."""

import torch

from core.engine.registry import ATTACKS, AttackSpec, Knob


def random_sign(model, x, y, eps, alpha, steps, generator=None, share: float = 1.0):
    """Move a share of the pixels by +-eps at random (the model is not even asked)."""
    generator = generator or torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
    moved = (torch.rand(x.shape, generator=generator) < share).to(x)
    return (x + eps * signs * moved).clamp(0, 1)


SPEC = ATTACKS.register(
    AttackSpec(
        "toy_random_sign",
        "Toy: random signs",
        random_sign,
        iterative=False,
        knobs=(Knob("share", 1.0, "share of the pixels moved", low=0.0, high=1.0),),
    )
)
