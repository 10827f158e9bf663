"""`python -m core report`: every number README states about a run (or a comparison), computed from its files.

Accuracy gaps between two models of one run are paired over the same test images: the standard error of the gap
is std(a_i - b_i) / sqrt(n) from the per-image records (evaluation.safetensors), and z = gap / SE. Gaps over
seeds (compare.json) use the per-seed differences: SE = std / sqrt(seeds). "Beyond noise" (and a * after a gap) is
core.engine.stats' one rule: the 95% interval excludes 0, Student's t on seeds - 1 degrees of freedom over seeds.
"""

from __future__ import annotations

import math
import statistics

import torch
from safetensors.torch import load_file

from core.detectors.detect import reconstruction_error
from core.engine.registry import DEFENCES, DETECTORS
from core.engine.stats import beyond_noise, binomial_gap, floored_gap, paired_gap, seed_gap, verdict  # noqa: F401
from core.experiments.budget import budget_points, budget_progress
from core.experiments.defence_grid import adaptive_cases, case_label, defence_rows
from core.experiments.pipeline import EVALUATION_FILE, MODEL_NAMES
from core.experiments.run import Run, project_path
from core.experiments.smoothness import DETECTORS_MEASURED
from core.experiments.sweep import accuracy_at

# The model pairs README compares: (a, b, why).
RUN_GAPS = (
    ("undefended", "clean_reference", "do the poisons hurt?"),
    ("filter_only", "undefended", "does the filter help a T = 1 model?"),
    ("distillation_only", "undefended", "what does distillation alone change?"),
    ("filter_distillation", "distillation_only", "does the filter add to distillation?"),
    ("filter_distillation", "undefended", "the paper's method vs no defence"),
)


def run_gaps(run: Run) -> list[dict]:
    """Every RUN_GAPS pair for clean, FGSM and I-FGSM accuracy, paired over the test images."""
    records = {key: value.bool() for key, value in load_file(str(run.directory / EVALUATION_FILE)).items()}
    rows = []
    for a, b, why in RUN_GAPS:
        for metric in ("clean_acc", "fgsm_acc", "ifgsm_acc"):
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "metric": metric,
                    "why": why,
                    **paired_gap(records[f"{a}/{metric}"], records[f"{b}/{metric}"]),
                }
            )
    return rows


def poison_facts(run: Run, data_root=None, sample: int = 2000) -> dict:
    """What the stored poisons change: grey levels per pixel, and the DAE error each poison adds to its image."""
    splits = run.splits(data_root)
    poisoned = run.poisons(splits.train)
    index = torch.nonzero(poisoned.poison_mask).flatten()
    if index.numel() == 0:
        return {}
    change = (poisoned.data.images[index].int() - splits.train.images[index].int()).abs()
    largest = int(change.max())
    mean = float(change.float().mean())
    facts = {
        "n_poisoned": int(index.numel()),
        "largest_change_levels": largest,
        "mean_change_levels": mean,
        "share_at_largest": float((change == largest).float().mean()),
        # With every pixel's change in {0..L} and mean m, at least m - (L - 1) of them must sit at L.
        "share_at_largest_lower_bound": max(0.0, mean - (largest - 1)),
    }
    chosen = index[torch.randperm(index.numel(), generator=torch.Generator().manual_seed(0))[:sample]]
    autoencoder = run.autoencoder()
    added = reconstruction_error(autoencoder, poisoned.data.images[chosen]) - reconstruction_error(
        autoencoder, splits.train.images[chosen]
    )
    bound = (largest / 255) ** 2
    facts.update(
        {
            "dae_error_added_n": int(chosen.numel()),
            "dae_error_added_median": float(added.median()),
            "dae_error_added_abs_max": float(added.abs().max()),
            "naive_bound": bound,
            "share_over_naive_bound": float((added.abs() > bound).float().mean()),
            "clean_error_median": float(run.train_scores[~run.poison_mask].median()),
            "clean_error_iqr": float(
                run.train_scores[~run.poison_mask].quantile(0.75) - run.train_scores[~run.poison_mask].quantile(0.25)
            ),
        }
    )
    return facts


def report_run(run: Run, data_root=None, tables: bool = True) -> str:
    """The run's tables (Markdown, unless tables is False), then every RUN_GAPS gap with its verdict, the worst-case
    gaps, the poisons' facts and the detectors' ROC AUC."""
    results = run.results
    lines = [
        markdown_tables(run) if tables else "",
        "",
        f"== {project_path(run.directory)}: preset {run.config.preset}, seed {run.config.seed} (one seed), "
        f"{results['data']['n_test']:,} test images, FGSM / I-FGSM on "
        f"{results['data'].get('n_attack_test', results['data']['n_test']):,} of them ==",
    ]
    lines.append(f"{'gap (a - b)':<44}{'metric':<11}{'gap':>9}{'SE':>8}{'z':>7}  verdict")
    for row in run_gaps(run):
        lines.append(
            f"{row['a'] + ' - ' + row['b']:<44}{row['metric']:<11}{row['gap'] * 100:>8.2f}p{row['se'] * 100:>7.2f}p"
            f"{row['z']:>7.1f}  {verdict(row)}"
        )
    if run.robustness:
        n = run.robustness["n_test"]
        lines += [
            "",
            f"worst-case accuracy gaps ({n} test images; per-image results of the adaptive attacks are not "
            "stored, so the SE treats the two models as independent, which overstates it):",
        ]
        models = run.robustness["models"]
        for a, b, _ in RUN_GAPS[1:]:
            pa, pb = models[a]["adaptive_acc"], models[b]["adaptive_acc"]
            gap = binomial_gap(pa, pb, n)
            lines.append(
                f"{a + ' - ' + b:<44}{'worst case':<11}{gap['gap'] * 100:>8.2f}p{gap['se'] * 100:>7.2f}p"
                f"{gap['z']:>7.1f}  {verdict(gap)}"
            )
        for name, report in models.items():
            overstated = report["attacks"]["ifgsm"] - report["adaptive_acc"]
            lines.append(f"{name}: I-FGSM (cross-entropy) minus worst case = {overstated * 100:.1f} points")
    facts = poison_facts(run, data_root)
    if facts:
        lines += [
            "",
            f"poisons: {facts['n_poisoned']:,}; largest change {facts['largest_change_levels']} levels, mean "
            f"{facts['mean_change_levels']:.3f}; share of pixels at the largest change {facts['share_at_largest']:.1%} "
            f"(the mean alone implies at least {facts['share_at_largest_lower_bound']:.1%})",
            f"DAE error a poison adds to its image ({facts['dae_error_added_n']:,} poisons): median "
            f"{facts['dae_error_added_median']:.2e}, largest |change| {facts['dae_error_added_abs_max']:.2e}; "
            f"{facts['share_over_naive_bound']:.1%} exceed ({facts['largest_change_levels']}/255)^2 = "
            f"{facts['naive_bound']:.1e}; clean errors: median {facts['clean_error_median']:.4f}, "
            f"IQR {facts['clean_error_iqr']:.4f}",
        ]
    if run.detectors:
        lines += [
            "",
            "detectors on this run (ROC AUC): "
            + ", ".join(f"{name} {quality['auroc']:.3f}" for name, quality in run.detectors["detectors"].items()),
        ]
    return "\n".join(lines)


def report_comparison(comparison: dict) -> str:
    """Per threat: each detector's ROC AUC and each filter's student vs the no-filter student, over seeds."""
    seeds = list(comparison["runs"])
    lines = ["", f"== comparison: preset {comparison['config']['experiment']['preset']}, {len(seeds)} seeds =="]
    for threat, summary in comparison["summary"].items():
        per_seed = [comparison["runs"][seed][threat] for seed in seeds]
        lines.append(f"-- {threat}")
        aucs = {
            name: quality["auroc"]["mean"]
            for name, quality in summary["filters"].items()
            if name in DETECTORS and quality.get("auroc")
        }
        lines.append("ROC AUC (mean over seeds): " + ", ".join(f"{name} {value:.3f}" for name, value in aucs.items()))
        reference = [run["reference"]["clean_reference"]["clean_acc"] for run in per_seed]
        undefended = [run["reference"]["undefended"]["clean_acc"] for run in per_seed]
        gap = seed_gap(undefended, reference)
        lines.append(
            f"undefended - clean_reference, clean accuracy: {gap['gap'] * 100:+.2f} +- {gap['se'] * 100:.2f} points "
            f"(z {gap['z']:.1f}, {verdict(gap)})"
        )
        baseline = [run["filters"]["none"].get("student") for run in per_seed]
        for name in summary["filters"]:
            students = [run["filters"][name].get("student") for run in per_seed]
            if name == "none" or not all(students) or not all(baseline):
                continue
            for metric in ("clean_acc", "adaptive_acc", "attack_success_rate"):
                if metric not in students[0]:
                    continue
                gap = seed_gap([s[metric] for s in students], [s[metric] for s in baseline])
                lines.append(
                    f"student behind {name} - no filter, {metric}: {gap['gap'] * 100:+.1f} +- {gap['se'] * 100:.1f} "
                    f"points (z {gap['z']:.1f}, {verdict(gap)})"
                )
        hard = [run["reference"]["undefended"]["clean_acc"] for run in per_seed]
        students = [
            run["filters"]["none"]["student"]["clean_acc"] for run in per_seed if run["filters"]["none"].get("student")
        ]
        if len(students) == len(hard):
            gap = seed_gap(hard, students)
            lines.append(
                f"undefended (T = 1) - no-filter student (T), clean accuracy: {gap['gap'] * 100:+.1f} +- "
                f"{gap['se'] * 100:.1f} points"
            )
    return "\n".join(lines)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def markdown_tables(run: Run) -> str:
    """README's tables of a run, in Markdown, straight from its JSON files."""
    results, lines = run.results, []
    lines += ["| model | clean | FGSM | I-FGSM |", "| --- | --- | --- | --- |"]
    for name in MODEL_NAMES:
        m = results["models"][name]
        label = f"{name} (the paper's method)" if name == "filter_distillation" else name
        lines.append(f"| {label} | {_pct(m['clean_acc'])} | {_pct(m['fgsm_acc'])} | {_pct(m['ifgsm_acc'])} |")
    f, p = results["filter"], results["poison"]
    lines += [
        "",
        f"Poisons: {p['n_poisoned']:,} of {p['n_train']:,} training images, {p['attack']} eps {p['eps']}, at most "
        f"{p['linf_levels']} grey levels changed (mean {p['mean_abs_change_levels']:.2f}). Filter ({f['mode']}): "
        f"threshold {f['threshold']:.5f}, ROC AUC {f['auroc']:.3f}, precision {f['precision']:.3f}, recall "
        f"{f['recall']:.3f}; kept {f['kept_clean']:,} clean and {f['kept_poisoned']:,} poisoned, dropped "
        f"{f['dropped_clean']:,} clean and {f['dropped_poisoned']:,} poisoned; mean error clean "
        f"{f['mean_error_clean']:.6f}, poisoned {f['mean_error_poisoned']:.6f}.",
    ]
    paper, student = results["paper"], results["models"]["filter_distillation"]
    lines += [
        "",
        "| quantity | ours | paper |",
        "| --- | --- | --- |",
        f"| threshold after `infer_threshold` | {f['threshold']:.5f} | {paper['inferred_threshold']} |",
        f"| mean DAE reconstruction error, test set | {results['dae']['mean_reconstruction_error_test']:.6f} | "
        f"{paper['mean_reconstruction_error']} |",
        f"| teacher (T = {run.config.temperature:g}) training accuracy | {_pct(results['teacher_train_acc'])} | "
        f"{_pct(paper['teacher_train_acc'])} |",
        f"| student accuracy on adversarial test inputs | {_pct(student['ifgsm_acc'])} (I-FGSM), "
        f"{_pct(student['fgsm_acc'])} (FGSM) | {_pct(paper['student_adversarial_acc'])} |",
    ]
    paper_threshold = float((run.train_scores > paper["inferred_threshold"]).float().mean())
    lines.append(
        f"\nThe paper's inferred threshold {paper['inferred_threshold']} would drop "
        f"{int((run.train_scores > paper['inferred_threshold']).sum()):,} of {len(run.train_scores):,} training "
        f"images ({paper_threshold:.1%})."
    )
    if run.robustness:
        keys = (
            "clean",
            "fgsm",
            "ifgsm",
            "ifgsm_logits_t",
            "ifgsm_margin",
            "pgd_margin",
            "transfer_ifgsm",
            "worst_case",
        )
        lines += [
            "",
            f"Robustness ({run.robustness['n_test']} test images, eps {run.robustness['config']['eps']}):",
            "",
            "| model | " + " | ".join(keys) + " | zero-gradient inputs | worst case at 8/255 |",
            "| --- " * (len(keys) + 3) + "|",
        ]
        for name, report in run.robustness["models"].items():
            at_8 = next(
                (point["robust_acc"] for point in report["eps_curve"] if abs(point["eps"] - 8 / 255) < 1e-9), None
            )
            lines.append(
                f"| {name} | "
                + " | ".join(_pct(report["attacks"].get(key)) for key in keys)
                + f" | {report['zero_grad_fraction']:.1%} | {_pct(at_8)} |"
            )
    if run.detectors:
        lines += [
            "",
            "| detector | ROC AUC | precision | recall (dropping the run's share) |",
            "| --- | --- | --- | --- |",
        ]
        for name, quality in run.detectors["detectors"].items():
            lines.append(
                f"| {DETECTORS.label(name)} | {quality['auroc']:.3f} | {quality['precision']:.3f} | "
                f"{quality['recall']:.3f} |"
            )
    if run.abstention:
        a = run.abstention
        lines += [
            "",
            f"Abstention ({a['model']}, {a['config']['passes']} passes, cut-off {a['cutoff']:.3g} at fpr "
            f"{a['config']['fpr']} on {a['n_calibration']} trusted images, {a['n_test']} test images):",
            "",
            "| inputs | accuracy, answering all | coverage at the cut-off | accuracy on the answered |",
            "| --- | --- | --- | --- |",
        ]
        for name, result in a["sets"].items():
            at = result["at_cutoff"]
            lines.append(
                f"| {name} | {_pct(result['accuracy_all'])} | {_pct(at['coverage'])} | {_pct(at['accuracy'])} |"
            )
    if run.sweep:
        config, curves = run.sweep["config"], run.sweep["curves"]
        points = curves["detector"]
        lines += [
            "",
            f"Sweep: {len(points)} drop shares x {', '.join(curves)} filters x {len(config['seeds'])} seeds, "
            f"{config['steps']} optimiser steps per model, {config['n_test']} test images (attacks on "
            f"{config.get('n_attack_test', config['n_test'])}, worst case on {config['n_robust_test']}); "
            "detector-filtered student clean accuracy (mean over seeds) from "
            f"{min(p['mean']['clean_acc'] for p in points):.2%} to "
            f"{max(p['mean']['clean_acc'] for p in points):.2%}.",
        ]
    return "\n".join(lines)


def report_defence_grid(grid: dict) -> str:
    """Per threat case: each model's clean accuracy minus no defence's and minus the clean reference's, paired by
    seed, with its standard error (over the seeds that trained the model, floored at the test images' binomial noise;
    one seed: that noise alone) and * where it is beyond noise (core.engine.stats), and attack success with its
    standard error where the threat has one."""
    lines = [f"\n== defence grid: preset {grid['config']['experiment']['preset']} =="]
    for case in grid["summary"]:
        runs = [cases[case] for cases in grid["runs"].values() if case in cases]
        n_test = runs[0]["n_test"]
        has_asr = "attack_success_rate" in (grid["summary"][case]["models"].get("none") or {})
        lines.append(f"\n{case} ({n_test} test images): clean accuracy gaps, points; seeds per model")
        header = f"{'model':<24}{'seeds':>6}{'clean':>8}{'vs no defence':>26}{'vs clean reference':>26}"
        lines.append(header + (f"{'attack success':>22}" if has_asr else ""))
        for name in grid["summary"][case]["models"]:
            mine = [run for run in runs if (run["models"].get(name) or {}).get("clean_acc") is not None]
            if not mine:
                lines.append(f"{name:<24}{'n/a':>14}")
                continue
            accuracies = [run["models"][name]["clean_acc"] for run in mine]
            cells = []
            for reference in ("none", "clean_reference"):  # paired with the references of the model's own grid
                others = [
                    (run.get("references", {}).get(name) or {}).get(reference) or run["models"][reference]["clean_acc"]
                    for run in mine
                ]
                # floored at the test noise, as the findings' gaps are: seeds that happen to agree gave a standard
                # error near 0 and a z of -10 for a 2-point gap (grayscale_jpeg on the paper's perturbation)
                gap = floored_gap(accuracies, others, n_test)
                mark = "*" if beyond_noise(gap) else ""
                cells.append(f"{gap['gap'] * 100:+.1f} ± {gap['se'] * 100:.1f} (z {gap['z']:+.1f}){mark}")
            mean = sum(accuracies) / len(accuracies)
            line = f"{name:<24}{len(mine):>6}{mean * 100:>7.1f}%{cells[0]:>26}{cells[1]:>26}"
            rates = [
                run["models"][name]["attack_success_rate"]
                for run in mine
                if "attack_success_rate" in run["models"][name]
            ]
            if has_asr and rates:
                n_asr = mine[0]["models"][name].get("n_asr_test", n_test)
                rate = sum(rates) / len(rates)
                se = (
                    float(torch.tensor(rates, dtype=torch.float64).std()) / math.sqrt(len(rates))
                    if len(rates) > 1
                    else math.sqrt(rate * (1 - rate) / max(n_asr, 1))
                )
                line += f"{f'{rate * 100:.1f}% ± {se * 100:.1f}':>22}"
            lines.append(line)
        lines += _eot_lines(case, runs)
    return "\n".join(lines)


def _eot_lines(case: str, runs: list[dict]) -> list[str]:
    """For each model attacked both with EOT and one pass per step (a grid run with --eot-samples): the worst case
    each way and EOT minus one pass, paired by seed (binomial over the attacked images, unpaired, for one seed)."""
    lines = []
    names = dict.fromkeys(
        name for run in runs for name, m in run["models"].items() if "adaptive_acc_one_pass" in (m or {})
    )
    for name in names:
        mine = [run for run in runs if "adaptive_acc_one_pass" in (run["models"].get(name) or {})]
        eot = [run["models"][name]["adaptive_acc"] for run in mine]
        one_pass = [run["models"][name]["adaptive_acc_one_pass"] for run in mine]
        n_images = mine[0].get("n_robust_test", 1)
        gap = seed_gap(eot, one_pass) if len(mine) > 1 else binomial_gap(eot[0], one_pass[0], n_images)
        lines.append(
            f"{case} {name}: worst case with EOT {sum(eot) / len(eot) * 100:.1f}%, one pass per step "
            f"{sum(one_pass) / len(one_pass) * 100:.1f}% ({len(mine)} seed(s), {n_images} attacked images); EOT minus "
            f"one pass {gap['gap'] * 100:+.1f} ± {gap['se'] * 100:.1f} points"
        )
    return lines


KEEPS_AT_LEAST = 0.9  # issue 24: a defence keeps >= 90% of the clean reference's accuracy against every poison


# Issue 38's goal for one defence with one frozen setting: against every availability poison it keeps KEEPS_AT_LEAST
# of the clean reference's accuracy; against every backdoor the attack succeeds on under MAX_ATTACK_SUCCESS of the
# triggered test images at a cost of at most MAX_CLEAN_COST of clean accuracy against no defence; over GOAL_SEEDS seeds.
MAX_ATTACK_SUCCESS = 0.05
MAX_CLEAN_COST = 0.02
GOAL_SEEDS = 3
MAX_COST = 3.0  # plain trainings (bench/defence_cost.py measures each defence's ratio)
DEFENCE_COST_FILE = "bench/results/defence_cost.json"  # under the project folder


def required_poisons(grid: dict, defence: str) -> set[str]:
    """The availability poisons a defence must be measured on to be ranked complete: every plain one of the grid and
    the adaptive ones crafted against it."""
    adaptive = adaptive_cases()
    return {
        case
        for case in grid["summary"]
        if _is_availability(grid, case) and (case not in adaptive or adaptive[case][1] == defence)
    }


def _is_availability(grid: dict, case: str) -> bool:
    """A case whose poison aims at accuracy (no attack success rate): the rest are backdoors and label flipping."""
    return "attack_success_rate" not in (grid["summary"][case]["models"].get("none") or {})


def _with_own_reference(grid: dict, case: str, name: str, reference: str) -> list[tuple[float, float]]:
    """(model's clean accuracy, the reference's) per seed, the reference trained beside the model in its own grid (a
    merged grid keeps it under "references"; a single grid's cell holds it)."""
    pairs = []
    for results in grid["runs"].values():
        cell = results.get(case)
        metrics = (cell or {}).get("models", {}).get(name)
        if not metrics:
            continue
        own = cell.get("references", {}).get(name) or {
            ref: (cell["models"].get(ref) or {}).get("clean_acc") for ref in ("clean_reference", "none")
        }
        if own.get(reference) is not None:
            pairs.append((metrics["clean_acc"], own[reference]))
    return pairs


def defence_ranking(grid: dict, costs: dict | None = None) -> list[dict]:
    """Every defence of a (merged) grid ranked by its worst case over every poison it was trained behind: the share of
    the clean reference's clean accuracy it keeps against its worst availability poison (that poison named; the mean
    over seeds of its accuracy over the reference trained beside it), then the attack success it leaves against its
    worst backdoor and the clean accuracy it costs there against no defence, the fewest seeds behind any of its cells,
    and whether it meets each part of the goal; costs: bench/defence_cost.py's file, for the cost of each as a ratio to
    one plain training (a defence without one cannot be said to meet the goal). Label flipping (targeted, no
    trigger) is neither kind and is left to the grid's table. No defence is left out for doing badly; one measured
    on no availability poison ranks last."""
    ranking: dict[str, dict] = {}
    for case, summary in grid["summary"].items():
        targeted = "attack_success_rate" in (summary["models"].get("none") or {})
        backdoor = grid["config"]["case_settings"][case]["threat"] == "backdoor"
        if targeted and not backdoor:  # label flipping: neither an availability poison nor a backdoor
            continue
        for name, metrics in summary["models"].items():
            if name not in DEFENCES or not metrics:
                continue
            entry = ranking.setdefault(
                name,
                {
                    "defence": name,
                    "label": DEFENCES[name].label,
                    "kept": None,
                    "kept_case": None,
                    "asr": None,
                    "asr_case": None,
                    "clean_cost": None,
                    "cases": 0,
                    "availability_cases": 0,
                    "measured": set(),
                    "backdoor_cases": 0,
                    "seeds": metrics["clean_acc"]["n"],
                },
            )
            entry["cases"] += 1
            entry["seeds"] = min(entry["seeds"], metrics["clean_acc"]["n"])
            entry["backdoor_cases" if backdoor else "availability_cases"] += 1
            entry["measured"].add(case)
            if backdoor:
                asr = (metrics.get("attack_success_rate") or {}).get("mean")
                if asr is not None and (entry["asr"] is None or asr > entry["asr"]):
                    entry.update(asr=asr, asr_case=case)
                pairs = _with_own_reference(grid, case, name, "none")
                if pairs:
                    cost = sum(none - acc for acc, none in pairs) / len(pairs)
                    entry["clean_cost"] = cost if entry["clean_cost"] is None else max(entry["clean_cost"], cost)
            else:
                pairs = _with_own_reference(grid, case, name, "clean_reference")
                if pairs:
                    kept = sum(acc / reference for acc, reference in pairs) / len(pairs)
                    if entry["kept"] is None or kept < entry["kept"]:
                        entry.update(kept=kept, kept_case=case)
    for entry in ranking.values():
        # measured on every availability poison it must face: the plain ones and those crafted against it (one crafted
        # against another defence counts where it was measured)
        required = required_poisons(grid, entry["defence"])
        entry["required"], entry["required_measured"] = len(required), len(required & entry.pop("measured"))
        entry["complete"] = entry["kept"] is not None and entry["required_measured"] == entry["required"]
        entry["keeps"] = entry["kept"] is not None and entry["kept"] >= KEEPS_AT_LEAST
        entry["removes_backdoors"] = (
            entry["asr"] is not None
            and entry["asr"] < MAX_ATTACK_SUCCESS
            and entry["clean_cost"] is not None
            and entry["clean_cost"] <= MAX_CLEAN_COST
        )
        entry["cost"] = ((costs or {}).get("defences", {}).get(entry["defence"]) or {}).get("ratio")
        entry["meets_goal"] = (
            entry["complete"]
            and entry["keeps"]
            and entry["removes_backdoors"]
            and entry["seeds"] >= GOAL_SEEDS
            and entry["cost"] is not None
            and entry["cost"] <= MAX_COST
        )
    return sorted(
        ranking.values(),
        key=lambda entry: (
            -1 if entry["kept"] is None else -entry["kept"],
            2 if entry["asr"] is None else entry["asr"],
        ),
    )


def ranking_table(grid: dict, costs: dict | None = None) -> tuple[list[dict], str]:
    """The ranking as rows of text (column -> cell) and one sentence: whether any defence meets the goal, or how far
    the best of those measured on every availability poison falls (a defence measured on fewer may rank above it:
    its row says on how many). README's block and the Detectors page show these."""
    backdoors = sum(1 for settings in grid["config"]["case_settings"].values() if settings["threat"] == "backdoor")

    def case(name):
        return case_label(grid, name) if name else "-"

    ranking = defence_ranking(grid, costs)
    rows = [
        {
            "rank": str(number),
            "defence": entry["defence"],
            "kept vs clean reference, worst availability poison": (
                f"{entry['kept']:.1%} ({case(entry['kept_case'])})" if entry["kept"] is not None else "not measured"
            ),
            # of the poisons it must face (the plain ones and those crafted against it), how many it was measured on
            "poisons": f"{entry['required_measured']} of {entry['required']}",
            "backdoor success, worst": (
                f"{entry['asr']:.1%} ({case(entry['asr_case'])})" if entry["asr"] is not None else "not measured"
            ),
            "clean cost there": f"{entry['clean_cost'] * 100:+.1f} points" if entry["clean_cost"] is not None else "-",
            "backdoors": f"{entry['backdoor_cases']} of {backdoors}",
            "cost (plain trainings)": f"{entry['cost']:.1f}x" if entry["cost"] is not None else "not measured",
            "seeds (fewest)": str(entry["seeds"]),
        }
        for number, entry in enumerate(ranking, 1)
    ]
    winners = [entry["defence"] for entry in ranking if entry["meets_goal"]]
    complete = [entry for entry in ranking if entry["complete"]]
    if winners:
        sentence = f"Meets the goal (every poison, {GOAL_SEEDS} seeds, at most {MAX_COST:g}x): {', '.join(winners)}."
    elif complete:
        best = complete[0]
        sentence = (
            f"No defence meets the goal. Of those measured on every availability poison, the best worst case, "
            f"{best['defence']}, keeps {best['kept']:.1%} of the clean reference against {case(best['kept_case'])} "
            f"(the bar: {KEEPS_AT_LEAST:.0%}), on {best['seeds']} seed(s) at its fewest."
        )
    else:
        sentence = "No defence has been measured on every availability poison yet."
    return rows, sentence


def report_defence_ranking(grid: dict, costs: dict | None = None) -> str:
    rows, sentence = ranking_table(grid, costs)
    if not rows:
        return sentence
    lines = ["| " + " | ".join(rows[0]) + " |", "| --- " * len(rows[0]) + "|"]
    lines += ["| " + " | ".join(row.values()) + " |" for row in rows]
    return "\n".join([*lines, "", sentence])


def defence_grid_markdown(grid: dict) -> str:
    """README's table of the grid: one row per reference model and defence, one column per threat case (with its
    number of seeds), each cell 'clean / worst case' as mean ± std over seeds, attack success where it applies, and
    the published anchor beside ours."""
    cases = list(grid["summary"])
    header = [f"{case_label(grid, case)} ({grid['case_seeds'][case]} seed(s))" for case in cases]
    rows: dict[str, dict[str, str]] = {}  # model -> case -> cell: a model a case did not measure gets a dash there
    for case in cases:
        for row in defence_rows(case, grid["summary"][case]):
            cell = row["clean"] if row["clean"].startswith("n/a") else f"{row['clean']} / {row['worst case']}"
            if "attack success" in row:
                cell += f", ASR {row['attack success']}"
            if row["published (CIFAR-10)"]:
                cell += f" (published {row['published (CIFAR-10)']})"
            rows.setdefault(row["model"], {})[case] = cell
    lines = ["| model (clean accuracy / worst case) | " + " | ".join(header) + " |"]
    lines.append("| --- " * (len(cases) + 1) + "|")
    lines += [
        f"| {model} | " + " | ".join(cells.get(case, "-") for case in cases) + " |" for model, cells in rows.items()
    ]
    return "\n".join(lines)


def report_budget(curves: dict) -> str:
    """The budget curves (budget.json), one table per threat: clean accuracy undefended, behind each defence and of
    the clean reference, and the gaps README quotes (undefended minus clean reference; each defence minus
    undefended) with the binomial standard error over the test images (one seed: no seed-to-seed variation)."""
    lines = []
    for threat, curve in curves.items():
        defences, n_test = curve["config"]["defences"], curve["n_test"]
        measured, planned = budget_progress(curve)
        partial = f", partial: {measured} of {planned} points" if measured < planned else ""
        lines.append(f"\n== {threat}: clean test accuracy ({n_test} test images, one seed{partial}) ==")
        lines.append(
            f"{'eps':>10}{'fraction':>10}{'smooth':>8}{'undefended':>12}"
            + "".join(f"{name:>12}" for name in defences)
            + f"{'clean ref.':>12}{'damage (points)':>20}"
            + "".join(f"{name + ' gain':>20}" for name in defences)
        )
        for point in budget_points(curve):
            damage = binomial_gap(point["undefended"], point["clean_reference"], n_test)
            gains = [binomial_gap(point["defended"][name], point["undefended"], n_test) for name in defences]
            lines.append(
                f"{point['eps'] * 255:>6.0f}/255{point['fraction']:>10.0%}{point['smooth_scale']:>8}"
                f"{point['undefended']:>12.1%}"
                + "".join(f"{point['defended'][name]:>12.1%}" for name in defences)
                + f"{point['clean_reference']:>12.1%}"
                + "".join(f"{gap['gap'] * 100:>+13.1f} ± {gap['se'] * 100:.1f}" for gap in [damage, *gains])
            )
    return "\n".join(lines)


def report_sweep(run: Run) -> str:
    """README's shipped-sweep numbers, from the run's sweep.json: points measured, seeds, the student at 0% dropped,
    and at the sweep share nearest the run's own drop rate the DAE filter's student against dropping at random and the
    oracle, with the DAE - random gap's standard error over seeds (paired by seed)."""
    sweep = run.sweep
    if not sweep:
        name = project_path(run.directory)
        return f"{name}: no sweep.json (python -m core sweep --run-dir {name})"
    config, measurements = sweep["config"], sweep["measurements"]
    total = len(config["drop_shares"]) * len(config["filters"]) * len(config["seeds"])
    by = {(m["filter"], m["target_share"], m["seed"]): m["clean_acc"] for m in measurements}
    complete_seeds = [
        seed
        for seed in config["seeds"]
        if all((name, share, seed) in by for name in config["filters"] for share in config["drop_shares"])
    ]
    zero = [by[("detector", 0.0, seed)] for seed in config["seeds"] if ("detector", 0.0, seed) in by]
    run_share = float((run.train_scores > run.threshold).float().mean())
    share = min(config["drop_shares"], key=lambda value: abs(value - run_share) if value > 0 else math.inf)
    lines = [
        f"{project_path(run.directory)}: {len(measurements)} of {total} points measured, "
        f"{len(complete_seeds)} complete seed(s) "
        f"{complete_seeds}, {sweep['seconds']:.0f} s in its last invocation (each point records its own)",
        f"student at 0% dropped: {statistics.mean(zero):.1%} clean (std {statistics.stdev(zero) * 100:.1f} points "
        f"over {len(zero)} seeds)"
        if len(zero) > 1
        else f"student at 0% dropped: {zero[0]:.1%} clean (one seed)"
        if zero
        else "no point at 0% dropped yet",
    ]
    seeds = [seed for seed in config["seeds"] if all((name, share, seed) in by for name in config["filters"])]
    if seeds:
        means = {name: statistics.mean(by[(name, share, seed)] for seed in seeds) for name in config["filters"]}
        gap = floored_gap(
            [by[("detector", share, s)] for s in seeds], [by[("random", share, s)] for s in seeds], config["n_test"]
        )
        lines.append(
            f"at {share:.1%} dropped (the run's threshold drops {run_share:.1%}), {len(seeds)} seed(s): "
            + ", ".join(f"{name} {value:.1%}" for name, value in means.items())
            + f"; DAE minus random {gap['gap'] * 100:+.1f}"
            + (
                f" ± {gap['se'] * 100:.1f} points (SE over seeds, paired by seed, at least the test noise), "
                f"{verdict(gap)}"
                if gap["n"] > 1
                else " points (one seed: no standard error over seeds)"
            )
        )
    if "oracle" in config["filters"] and len(complete_seeds) > 1:
        lifts = []
        for value in config["drop_shares"]:
            if value > 0:
                gap = floored_gap(
                    [by[("oracle", value, seed)] for seed in complete_seeds],
                    [by[("oracle", 0.0, seed)] for seed in complete_seeds],
                    config["n_test"],
                )
                lifts.append((gap["gap"], gap["se"], value))
        if lifts:
            lift, se, at = max(lifts)
            lines.append(
                "the oracle's largest clean-accuracy lift over its 0%-dropped student: "
                f"{lift * 100:+.1f} ± {se * 100:.1f} points at {at:.1%} dropped "
                f"(SE over {len(complete_seeds)} seeds, paired by seed, at least the test noise)"
            )
    if len(complete_seeds) <= 1:  # no spread over seeds yet: the one complete seed's gaps with their test noise
        lines += one_seed_sweep_gaps(sweep, complete_seeds[0] if complete_seeds else config["seeds"][0])
    else:
        lines += seed_paired_sweep_gaps(sweep, complete_seeds)
    return "\n".join(lines)


def report_points(run: Run) -> str:
    """The single points trained at a threshold on the run (points.json: the Threshold page's *Train at this
    threshold*, `python -m core point`), one seed each, beside the sweep's detector curve where it covers them."""
    lines = [
        f"{'score':<12}{'threshold':>11}{'dropped':>9}{'T':>5}{'steps':>7}{'clean':>9}{'I-FGSM':>9}{'worst':>9}  "
        "sweep here (DAE)"
    ]
    for point in sorted(run.points, key=lambda p: (p["score"], p["threshold"])):
        beside = "-"
        if run.sweep and point["score"] == "dae" and point["steps"] == run.sweep["config"]["steps"]:
            at = accuracy_at(run.sweep, point["threshold"])
            if at["clean_acc"] is not None:
                beside = f"{at['where']}: clean {at['clean_acc']:.2%}, worst {at['adaptive_acc']:.2%}"
        lines.append(
            f"{point['score']:<12}{point['threshold']:>11.5f}{point['drop_share']:>9.1%}{point['temperature']:>5g}"
            f"{point['steps']:>7}{point['clean_acc']:>9.2%}{point['ifgsm_acc']:>9.2%}{point['adaptive_acc']:>9.2%}  "
            f"{beside}"
        )
    lines.append("one seed per point (seed 0 of the sweep's repeats); the sweep's column: its mean at that threshold")
    return "\n".join(lines)


def seed_paired_sweep_gaps(sweep: dict, seeds: list[int]) -> list[str]:
    """For a sweep with several complete seeds: at every share, DAE minus random and DAE minus oracle, clean and worst
    case, as the mean of per-seed differences. Its standard error is the one over those seeds (paired by seed: it
    carries the training-to-training variation and the test noise alike), floored at the test noise of that mean
    (independent binomials over the images): two or three seeds that happen to agree would otherwise give an SE near 0
    and a z that means nothing."""
    config = sweep["config"]
    sizes = {"clean_acc": config["n_test"], "adaptive_acc": config["n_robust_test"]}
    by = {(m["filter"], m["target_share"], m["seed"]): m for m in sweep["measurements"]}
    lines = [
        f"complete seeds {seeds}, gaps per share (SE over {len(seeds)} seeds, paired by seed, at least the test noise "
        f"of the mean; clean on {sizes['clean_acc']} images, worst case on {sizes['adaptive_acc']}):"
    ]
    for share in sorted(config["drop_shares"]):
        if share == 0:
            continue
        cells = []
        for other in ("random", "oracle"):
            if not all((other, share, seed) in by for seed in seeds):
                continue
            for key, word in (("clean_acc", "clean"), ("adaptive_acc", "worst")):
                a = [by[("detector", share, seed)][key] for seed in seeds]
                b = [by[(other, share, seed)][key] for seed in seeds]
                gap = floored_gap(a, b, sizes[key])
                mark = "*" if beyond_noise(gap) else ""
                cells.append(
                    f"DAE - {other} {word} {gap['gap'] * 100:+.1f} ± {gap['se'] * 100:.1f} (z {gap['z']:+.1f}){mark}"
                )
        lines.append(f"  {share:>6.1%} dropped: " + "; ".join(cells))
    return lines


def one_seed_sweep_gaps(sweep: dict, seed: int | None = None) -> list[str]:
    """For a sweep with one seed: at every share, DAE minus random and DAE minus oracle, clean and worst case, with
    the standard error test-set noise alone allows (independent binomials: the sweep keeps no per-image results, so
    the pairing that would shrink it is unavailable; no seed-to-seed variation is in it)."""
    config = sweep["config"]
    sizes = {"clean_acc": config["n_test"], "adaptive_acc": config["n_robust_test"]}
    seed = config["seeds"][0] if seed is None else seed
    by = {(m["filter"], m["target_share"]): m for m in sweep["measurements"] if m["seed"] == seed}
    lines = [
        f"seed {seed}, gaps per share (test-noise SE, independent binomials; clean on {sizes['clean_acc']} "
        f"images, worst case on {sizes['adaptive_acc']}):"
    ]
    for share in sorted(config["drop_shares"]):
        if share == 0 or ("detector", share) not in by:
            continue
        cells = []
        for other in ("random", "oracle"):
            if (other, share) not in by:
                continue
            for key in sizes:
                a, b = by[("detector", share)][key], by[(other, share)][key]
                gap = binomial_gap(a, b, sizes[key])
                cells.append(
                    f"DAE - {other} {'clean' if key == 'clean_acc' else 'worst'} "
                    f"{gap['gap'] * 100:+.1f} ± {gap['se'] * 100:.1f} (z {gap['z']:+.1f})"
                    + ("*" if beyond_noise(gap) else "")
                )
        lines.append(f"  {share:>6.1%} dropped: " + "; ".join(cells))
    return lines


def format_results(results: dict) -> str:
    """The five models' accuracies, the filter's quality, and our numbers beside the paper's."""
    has_asr = "attack_success_rate" in results["models"][MODEL_NAMES[0]]
    lines = [f"{'model':<22}{'clean':>8}{'FGSM':>8}{'I-FGSM':>8}" + (f"{'attack success':>16}" if has_asr else "")]
    for name in MODEL_NAMES:
        m = results["models"][name]
        lines.append(
            f"{name:<22}{m['clean_acc']:>8.2%}{m['fgsm_acc']:>8.2%}{m['ifgsm_acc']:>8.2%}"
            + (f"{m['attack_success_rate']:>16.2%}" if has_asr else "")
        )
    f, p, paper = results["filter"], results["poison"], results["paper"]
    threat = p.get("threat", "perturbation")
    what = (
        f"{p['attack']}, eps {p['eps']}, max change {p['linf_levels']} grey levels"
        if threat == "perturbation"
        else f"{threat}, {p.get('n_relabelled', 0)} relabelled"
    )
    lines += [
        "",
        f"poisons: {p['n_poisoned']} of {p['n_train']} training images ({what})",
        f"filter ({f['mode']}): threshold {f['threshold']:.5f}, ROC AUC {f['auroc']:.3f}, "
        f"precision {f['precision']:.3f}, recall {f['recall']:.3f}, F1 {f['f1']:.3f}",
        f"  kept clean {f['kept_clean']}, kept poisoned {f['kept_poisoned']}, dropped clean {f['dropped_clean']}, "
        f"dropped poisoned {f['dropped_poisoned']}",
        "",
        f"{'quantity':<46}{'ours':>10}{'paper':>10}",
    ]
    student = results["models"]["filter_distillation"]
    for label, ours, theirs, style in (
        ("inferred threshold", f["threshold"], paper["inferred_threshold"], ".5f"),
        (
            "mean DAE reconstruction error (test set)",
            results["dae"]["mean_reconstruction_error_test"],
            paper["mean_reconstruction_error"],
            ".6f",
        ),
        ("teacher (T) training accuracy", results["teacher_train_acc"], paper["teacher_train_acc"], ".2%"),
        ("student accuracy on I-FGSM test inputs", student["ifgsm_acc"], paper["student_adversarial_acc"], ".2%"),
        ("student accuracy on FGSM test inputs", student["fgsm_acc"], paper["student_adversarial_acc"], ".2%"),
    ):
        lines.append(f"{label:<46}{ours:>10{style}}{theirs:>10{style}}")
    if f["auroc"] == f["auroc"] and f["auroc"] < 0.6:
        lines.append(
            f"note: ROC AUC {f['auroc']:.3f} means reconstruction error barely separates these poisons from clean "
            "images."
        )
    return "\n".join(lines)


def format_seeds(seeds, summary: dict, out) -> str:
    """`run --seeds K`: each model's accuracies as mean +- std over the seeds, and the filter's ROC AUC."""
    lines = [f"\n{'model':<22}{'clean':>16}{'FGSM':>16}{'I-FGSM':>16}   (mean +- std over {len(seeds)} seeds)"]
    for name in MODEL_NAMES:
        m = summary["models"][name]
        lines.append(
            f"{name:<22}"
            + "".join(
                f"{m[key]['mean']:>9.2%} +-{m[key]['std'] * 100:4.1f}" for key in ("clean_acc", "fgsm_acc", "ifgsm_acc")
            )
        )
    lines.append(
        f"filter ROC AUC {summary['filter']['auroc']['mean']:.3f} +- {summary['filter']['auroc']['std']:.3f}; "
        f"seeds: {out / 'seeds.json'}"
    )
    return "\n".join(lines)


def format_robustness(run, robustness: dict) -> str:
    """`robustness`: each model's clean, cross-entropy I-FGSM and adaptive worst-case accuracy, zero-gradient share."""
    lines = [f"{'model':<22}{'clean':>8}{'I-FGSM (CE)':>20}{'worst case':>12}{'zero grad':>11}"]
    for name, report in robustness["models"].items():
        attacks = report["attacks"]
        lines.append(
            f"{name:<22}{attacks['clean']:>8.2%}{attacks['ifgsm']:>20.2%}{report['adaptive_acc']:>12.2%}"
            f"{report['zero_grad_fraction']:>11.2%}"
        )
    lines.append(
        f"robustness: {project_path(run.directory / 'robustness.json')} ({robustness['n_test']} test images, "
        f"eps {robustness['config']['eps']})"
    )
    return "\n".join(lines)


def format_abstention(model: str, report: dict) -> str:
    """The cut-off, then accuracy on every input set, answered and not."""
    config = report["config"]
    lines = [
        f"MC dropout ({config['passes']} passes) on {model}: cut-off {report['cutoff']:.3g} "
        f"(fpr {config['fpr']} on {report['n_calibration']} trusted clean images)",
        f"{'inputs':<14}{'accuracy (all)':>16}{'coverage':>10}{'accuracy (answered)':>21}",
    ]
    for name, result in report["sets"].items():
        at = result["at_cutoff"]
        lines.append(f"{name:<14}{result['accuracy_all']:>16.2%}{at['coverage']:>10.2%}{at['accuracy']:>21.2%}")
    return "\n".join(lines)


def format_smoothness(result: dict) -> str:
    """One row per scale: each detector's ROC AUC and the victim's clean accuracy."""
    lines = [f"{'smooth scale':<14}" + "".join(f"{name + ' AUC':>16}" for name in DETECTORS_MEASURED) + "   clean acc"]
    for point in result["points"]:
        aucs = "".join(f"{point['auroc'][name]:>16.3f}" for name in DETECTORS_MEASURED)
        lines.append(f"{point['smooth_scale']:<14}{aucs}{point['clean_acc']:>12.1%}")
    lines.append(f"clean reference {result['points'][0]['clean_reference_acc']:.1%}")
    return "\n".join(lines)
