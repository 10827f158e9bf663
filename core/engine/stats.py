"""The one significance rule every report, page and document applies, and the gaps it is applied to.

A gap (a - b) comes with its standard error SE and the degrees of freedom behind it. It is "beyond noise" when its
95% interval excludes 0: |gap| > c * SE, with c the 97.5% quantile of Student's t on those degrees of freedom. Over
seeds, df = seeds - 1: with 3 seeds c = 4.30, not the 2 of a normal approximation (|z| >= 2 on 3 seeds is no
evidence). Over test images (a paired per-image gap, or two accuracies as independent binomials), df is large and
c = 1.96. A sweep's gap over a few seeds has its SE floored at the test noise of the mean (floored_gap): seeds that
happen to agree do not make a gap significant. The words a document uses ("beyond noise", "no measurable harm",
"restores", "best") are chosen from these numbers by the generator (core/reporting/findings.py,
core/reporting/docs.py), not typed.
"""

from __future__ import annotations

import math

import torch

CONFIDENCE = 0.95


def critical(df: float) -> float:
    """The two-sided 95% critical value of Student's t on df degrees of freedom (normal for df = inf)."""
    # deferred: scipy.stats adds about 0.8 s to every import of this module and only the t quantile needs it
    from scipy.stats import norm, t

    quantile = 1 - (1 - CONFIDENCE) / 2
    return float(norm.ppf(quantile) if math.isinf(df) or df > 1e6 else t.ppf(quantile, df))


def _gap(gap: float, se: float, n: int, df: float) -> dict:
    z = gap / se if se > 0 else (0.0 if gap == 0 else math.inf)
    return {"gap": gap, "se": se, "z": z, "n": n, "df": df}


def paired_gap(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean of a - b over the same images (bool or 0/1 per image) with its standard error (df = images - 1)."""
    difference = a.float() - b.float()
    n = difference.numel()
    se = float(difference.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return _gap(float(difference.mean()), se, n, max(n - 1, 1))


def seed_gap(a: list[float], b: list[float]) -> dict:
    """Mean of per-seed differences a_s - b_s with its standard error over seeds (df = seeds - 1)."""
    differences = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    n = differences.numel()
    se = float(differences.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return _gap(float(differences.mean()), se, n, max(n - 1, 1))


def floored_gap(a: list[float], b: list[float], n_images: int) -> dict:
    """seed_gap of accuracies measured on n_images each, its standard error floored at the test noise of the mean
    difference (independent binomials): a few seeds that happen to agree give an SE near 0 and a z that means nothing;
    one seed gives that noise alone (then df is the images')."""
    gap = seed_gap(a, b)
    noise = math.sqrt(sum(x * (1 - x) + y * (1 - y) for x, y in zip(a, b)) / n_images) / len(a)
    se = noise if gap["n"] < 2 else max(gap["se"], noise)
    df = math.inf if gap["n"] < 2 else gap["df"]
    return _gap(gap["gap"], se, gap["n"], df)


def binomial_gap(a: float, b: float, n: int) -> dict:
    """a - b for two accuracies on the same n test images, one seed, with the unpaired binomial standard error
    sqrt(a(1-a)/n + b(1-b)/n): the grid stores no per-image results, and pairing would only shrink it."""
    return _gap(a - b, math.sqrt(a * (1 - a) / n + b * (1 - b) / n), n, math.inf)


def beyond_noise(gap: dict) -> bool:
    """Whether the gap's 95% interval excludes 0 (the rule above)."""
    return gap["se"] > 0 and abs(gap["gap"]) > critical(gap["df"]) * gap["se"]


def interval(gap: dict) -> tuple[float, float]:
    """The gap's 95% interval."""
    half = critical(gap["df"]) * gap["se"]
    return gap["gap"] - half, gap["gap"] + half


def verdict(gap: dict) -> str:
    """'beyond noise' or 'within noise', with the rule that decided it."""
    rule = "t, {:g} df".format(gap["df"]) if not math.isinf(gap["df"]) and gap["df"] < 1000 else "normal"
    word = "beyond noise" if beyond_noise(gap) else "within noise"
    return f"{word} (95% {rule}: |gap| vs {critical(gap['df']):.2f} SE)"


def points(gap: dict, digits: int = 2) -> str:
    """'-0.61 ± 0.26 points' (± one SE)."""
    return f"{gap['gap'] * 100:+.{digits}f} ± {gap['se'] * 100:.{digits}f} points"


def auroc_se(auroc: float, n_positive: int, n_negative: int) -> float:
    """Standard error of a ROC AUC (Hanley & McNeil 1982) from its value and the two class sizes."""
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    variance = (auroc * (1 - auroc) + (n_positive - 1) * (q1 - auroc**2) + (n_negative - 1) * (q2 - auroc**2)) / max(
        n_positive * n_negative, 1
    )
    return math.sqrt(max(variance, 0.0))


# ---- summaries over seeds ----


def summarise(runs: dict) -> dict:
    """Same nested shape as one run's result, with each number replaced by {mean, std, n} over seeds."""
    per_seed = list(runs.values())

    def merge(values: list):
        if all(isinstance(value, dict) for value in values):
            keys = [key for key in values[0] if all(key in value for value in values)]
            return {key: merge([value[key] for value in values]) for key in keys}
        numbers = [
            float(value)
            for value in values
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value))
        ]
        if not numbers:
            return None
        mean = sum(numbers) / len(numbers)
        std = math.sqrt(sum((x - mean) ** 2 for x in numbers) / (len(numbers) - 1)) if len(numbers) > 1 else 0.0
        return {"mean": mean, "std": std, "n": len(numbers)}

    threats = [threat for threat in per_seed[0] if all(threat in run for run in per_seed)]
    return {threat: merge([run[threat] for run in per_seed]) for threat in threats}


def mean_std(stat: dict | None, percent: bool) -> str:
    """A summary statistic {mean, std, n} as the tables show it: '98.1% ± 0.4' (std in points), the mean alone for
    one seed, '-' when there is none."""
    if not stat:
        return "-"
    if percent:
        return f"{stat['mean']:.1%} ± {stat['std'] * 100:.1f}" if stat["n"] > 1 else f"{stat['mean']:.1%}"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat["n"] > 1 else f"{stat['mean']:.3f}"
