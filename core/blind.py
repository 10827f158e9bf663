"""Blind settings: each defence's setting chosen on clean data before any grid sees a poison (issue 38).

A defence tuned on the poisons it is then judged against is judged on its own test set. Here each defence that
declares a strength (DefenceSpec.blind: a knob and its values from the weakest to the strongest) is trained on the
clean training split at every value and measured on the defender's held-out trusted slice (clean images no model of
the study trained on; never the test split). The chosen value is the strongest whose clean accuracy is at most
BUDGET below the undefended model's on that slice; the file records every value's accuracy, so the choice can be
checked, and `python -m core defences --blind FILE` freezes the choices for every poison of a grid.
"""

from __future__ import annotations

import time

from core.defence_grid import defence_context, defended_model
from core.defences import DefenceConfig
from core.evaluate import accuracy
from core.pipeline import ExperimentConfig, ModelCache, prepare
from core.registry import DEFENCES
from core.storage import ResultFile
from core.train import machine

BUDGET = 0.02  # clean accuracy a setting may cost (the "at most 2 points")

BLIND_FILE = ResultFile(
    "settings.json", "python -m core blind --out {folder}", ("config", "budget", "reference_acc", "defences", "knobs")
)


def blindly_tunable() -> tuple[str, ...]:
    """The defences that declare a strength to choose."""
    return tuple(spec.name for spec in DEFENCES.specs() if spec.blind)


def choose(reference_acc: float, accuracies: list[float], budget: float = BUDGET) -> int:
    """Index of the strongest value (the last) whose accuracy is at most `budget` below the reference; the weakest
    (0) when none is."""
    within = [index for index, acc in enumerate(accuracies) if acc >= reference_acc - budget]
    return within[-1] if within else 0


def blind_settings(
    experiment: ExperimentConfig, defences: tuple[str, ...], cache_dir, data_root=None, report=None
) -> dict:
    """{defence: {knob, values: [{value, clean_acc}], chosen, within_budget}} and the chosen knobs, measured on
    the trusted slice held out of the DAE's training (prepare's `calibration`)."""
    started = time.time()
    report = report or (lambda stage, done, total: None)
    cache = ModelCache(cache_dir)
    prepared = prepare(experiment, cache, data_root, report)
    validation = prepared.calibration
    reference, _ = prepared.classifier("clean_reference", prepared.splits.train, "clean_reference", prepared.data_key)
    reference_acc = accuracy(reference, validation.images, validation.labels)
    context = defence_context(prepared, experiment, cache, report)
    chosen, results = {}, {}
    total = sum(len(DEFENCES[name].blind[1]) for name in defences)
    done = 0
    for name in defences:
        knob, values = DEFENCES[name].blind
        measured = []
        for value in values:
            report("training behind each setting on clean data", done, total)
            config = DefenceConfig(seed=experiment.seed, knobs=((f"{name}.{knob}", value),))
            model, _ = defended_model(prepared, name, config, context, clean=True)
            measured.append({"value": value, "clean_acc": accuracy(model, validation.images, validation.labels)})
            done += 1
        index = choose(reference_acc, [point["clean_acc"] for point in measured])
        chosen[f"{name}.{knob}"] = values[index]
        results[name] = {
            "knob": knob,
            "values": measured,
            "chosen": values[index],
            "within_budget": measured[index]["clean_acc"] >= reference_acc - BUDGET,
        }
    report("training behind each setting on clean data", total, total)
    return {
        "config": experiment.to_dict(),
        "budget": BUDGET,
        "validation": {"what": "the defender's trusted images held out of the DAE's training", "n": len(validation)},
        "reference_acc": reference_acc,
        "defences": results,
        "knobs": chosen,
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
    }


def format_blind_settings(settings: dict) -> str:
    lines = [
        f"clean accuracy on {settings['validation']['n']} held-out trusted images; undefended "
        f"{settings['reference_acc']:.2%}; budget {settings['budget'] * 100:g} points",
        "",
        "| defence | knob | value: clean accuracy | chosen |",
        "| --- | --- | --- | --- |",
    ]
    for name, result in settings["defences"].items():
        values = ", ".join(f"{point['value']:g}: {point['clean_acc']:.2%}" for point in result["values"])
        within = "" if result["within_budget"] else " (none within budget: the weakest)"
        lines.append(f"| {name} | {result['knob']} | {values} | {result['chosen']:g}{within} |")
    return "\n".join(lines)
