"""Attack speed, ours vs torchattacks, measured side by side in one run on the same model and inputs.

    python bench/attacks.py [--n 512] [--repeats 3]

Prints the time of each and the ratio torchattacks / ours (>= 1 means ours is at least as fast), and
checks that the outputs agree to float precision.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchattacks  # noqa: E402

from core.attacks import fgsm, ifgsm  # noqa: E402
from core.engine.models import Classifier, ClassifierConfig  # noqa: E402
from core.engine.train import default_device  # noqa: E402


def best_time(run, repeats: int) -> tuple[float, torch.Tensor]:
    times, output = [], None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        output = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times), output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = default_device()
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(width=24)).to(device).eval()
    x = torch.rand(args.n, 3, 32, 32, device=device)
    y = torch.randint(0, 43, (args.n,), device=device)
    cases = [
        ("FGSM eps 0.01", lambda: fgsm(model, x, y, 0.01), lambda: torchattacks.FGSM(model, eps=0.01)(x, y)),
        (
            "I-FGSM eps 0.01, alpha 0.01, 10 steps",
            lambda: ifgsm(model, x, y, 0.01, 0.01, 10),
            lambda: torchattacks.BIM(model, eps=0.01, alpha=0.01, steps=10)(x, y),
        ),
    ]
    print(f"device {device}, {args.n} images, best of {args.repeats}")
    print(f"{'attack':<40}{'ours s':>10}{'torchattacks s':>16}{'ratio':>8}{'max |diff|':>12}")
    for name, ours, theirs in cases:
        ours()  # warm-up
        theirs()
        our_time, our_out = best_time(ours, args.repeats)
        their_time, their_out = best_time(theirs, args.repeats)
        difference = (our_out - their_out).abs().max().item()
        print(f"{name:<40}{our_time:>10.3f}{their_time:>16.3f}{their_time / our_time:>8.2f}{difference:>12.2e}")


if __name__ == "__main__":
    main()
