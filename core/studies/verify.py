"""`python -m core verify`: recompute a stratified sample of a shipped run's numbers from its stored models and
poisons, or check what follows from a compare.json alone (core/experiments/verify.py computes). Exit 1 when any
differs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from core.experiments.compare import load_comparison
from core.experiments.verify import verify_comparison, verify_run
from core.studies import STUDIES, DataOptions, Stages, StudySpec, load_run, option


@dataclass(frozen=True)
class VerifyOptions:
    run_dir: Path | None = option(None, "a run's output folder (holds results.json)", group="target", required=True)
    comparison: Path | None = option(
        None, "a compare.json (checks what follows from the file itself)", group="target", required=True
    )
    sample: float = option(0.1, "stratified share of the test set to recompute accuracies on")


def format_checks(checks: list[dict]) -> str:
    lines = [f"{'check':<58}{'stored':>12}{'recomputed':>12}{'error':>11}{'tolerance':>11}  ok"]
    for check in checks:
        lines.append(
            f"{check['name']:<58}{check['stored']:>12.6g}{check['recomputed']:>12.6g}{check['error']:>11.3g}"
            f"{check['tolerance']:>11.3g}  {'yes' if check['ok'] else 'NO'}"
        )
    return "\n".join(lines)


def main(options: VerifyOptions, data: DataOptions) -> int:
    if options.comparison:
        checks, target = verify_comparison(load_comparison(options.comparison)), options.comparison
    else:
        with Stages() as stages:
            run = load_run(options.run_dir)
            run.check_models()  # a missing or truncated model fails here, in seconds, before any recomputation
            checks = verify_run(run, options.sample, data.data_root, data.download, stages)
            target = options.run_dir
    print(format_checks(checks))
    failed = [check for check in checks if not check["ok"]]
    if failed:
        print(
            f"error: {len(failed)} of {len(checks)} numbers of {target} do not reproduce: "
            + ", ".join(check["name"] for check in failed),
            file=sys.stderr,
        )
        return 1
    print(f"verified: all {len(checks)} numbers of {target} reproduce within tolerance")
    return 0


STUDIES.register(
    StudySpec(
        "verify",
        "recompute a stratified sample of a shipped run's numbers from its stored models and poisons",
        VerifyOptions,
        main,
        needs_dataset=lambda options: options.comparison is None,  # a compare.json alone needs no images
    )
)
