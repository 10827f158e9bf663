"""Blind settings: each defence's setting chosen on clean data before any grid sees a poison (issue 38).

A defence tuned on the poisons it is then judged against is judged on its own test set. Here each defence that
declares a strength (DefenceSpec.blind: a knob and its values from the weakest to the strongest) is trained at every
value on the clean training split less a held-out fifth, and measured on that fifth (clean images no model of the
study trained on; never the test split; the compare preset's trusted slice held out of the DAE is 195 images, too few
to tell 2 points apart, its fifth of the train split 1,764). Defences that need clean data get the defender's trusted
images, as in a grid. The chosen value is the strongest whose clean accuracy is at most BUDGET below the undefended
model's on the held-out fifth; the file records every value's accuracy, so the choice can be checked, and
`python -m core defences --blind FILE` freezes the choices for every poison of a grid.
"""

from __future__ import annotations

import time
from dataclasses import replace

from core.defences import DefenceConfig
from core.engine.data import stratified_split
from core.engine.recipe import sampling_seed
from core.engine.registry import DEFENCES
from core.engine.storage import ResultFile
from core.engine.train import machine
from core.experiments.defence_grid import defence_context, defended_model
from core.experiments.evaluate import accuracy
from core.experiments.pipeline import ExperimentConfig, ModelCache, prepare

BUDGET = 0.02  # clean accuracy a setting may cost (the "at most 2 points")
VALIDATION_SHARE = 0.2  # of the clean train split, held out to measure each setting on

BLIND_FILE = ResultFile(
    "settings.json", "python -m core blind --out {folder}", ("config", "budget", "reference_acc", "defences", "knobs")
)


def blindly_tunable() -> tuple[str, ...]:
    """The defences that declare a strength to choose."""
    return tuple(spec.name for spec in DEFENCES.specs() if spec.blind)


def choose(reference_acc: float, accuracies: list[float], budget: float = BUDGET) -> int:
    """Index of the strongest value (the last) whose accuracy is at most `budget` below the reference; when none is,
    the least costly (the highest accuracy; the first of equals). Not "the weakest": I-BAU's later rounds give back
    what its first one costs (1 round 71%, 8 rounds 92%, checkpoints/blind_i_bau)."""
    within = [index for index, acc in enumerate(accuracies) if acc >= reference_acc - budget]
    return within[-1] if within else max(range(len(accuracies)), key=lambda index: (accuracies[index], -index))


def blind_settings(
    experiment: ExperimentConfig, defences: tuple[str, ...], cache_dir, data_root=None, report=None
) -> dict:
    """{defence: {knob, values: [{value, clean_acc}], chosen, within_budget}} and the chosen knobs."""
    started = time.time()
    report = report or (lambda stage, done, total: None)
    cache = ModelCache(cache_dir)
    prepared = prepare(experiment, cache, data_root, report)
    fit_index, held_index = stratified_split(
        prepared.splits.train.labels, VALIDATION_SHARE, sampling_seed(experiment.seed, "blind_validation")
    )
    validation = prepared.splits.train.subset(held_index)
    prepared = replace(  # the study's "clean training split" is the train split less the held-out fifth
        prepared,
        splits=replace(prepared.splits, train=prepared.splits.train.subset(fit_index)),
        data_key={**prepared.data_key, "blind_held_out": VALIDATION_SHARE},
    )
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
        "validation": {"what": "a held-out fifth of the clean train split", "n": len(validation)},
        "reference_acc": reference_acc,
        "defences": results,
        "knobs": chosen,
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
    }


def format_blind_settings(settings: dict) -> str:
    lines = [
        f"clean accuracy on {settings['validation']['n']} held-out clean training images; undefended "
        f"{settings['reference_acc']:.2%}; budget {settings['budget'] * 100:g} points",
        "",
        "| defence | knob | value: clean accuracy | chosen |",
        "| --- | --- | --- | --- |",
    ]
    for name, result in settings["defences"].items():
        values = ", ".join(f"{point['value']:g}: {point['clean_acc']:.2%}" for point in result["values"])
        within = "" if result["within_budget"] else " (none within budget: the least costly)"
        lines.append(f"| {name} | {result['knob']} | {values} | {result['chosen']:g}{within} |")
    return "\n".join(lines)
