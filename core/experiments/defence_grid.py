"""Every threat case against every training-time defence, over seeds: does anything get the accuracy back?

For each seed and threat case (the paper's I-FGSM at eps 0.01, I-FGSM at 8/255 on all of train, TAP, unlearnable
noise, label flip, backdoor) the train split is poisoned, every defence in core.engine.registry.DEFENCES turns it into
the set a classifier trains on (or trains it adversarially), and that classifier is measured: clean test accuracy, the
adaptive worst case over core.attacks.robust.attack_suite, and the attack success rate where the threat has one. Beside
them: the clean reference, no defence, and the oracle (drop exactly the poisons; empty when all of train is poisoned).
One classifier per defence, no distillation: the question is what the defence does to the data, and the detector
comparison (core.experiments.compare) already measures the distilled students. Every model is cached; the grid resumes
where it stopped.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from core.attacks.robust import RobustEvalConfig, attack_suite, is_stochastic
from core.defences import DefenceConfig, DefenceContext, grayscale, purified
from core.engine.data import ImageSet
from core.engine.executor import ExecutorConfig, finished_cells, run_missing_cells, worker_paths
from core.engine.models import Classifier
from core.engine.recipe import recipe_key
from core.engine.registry import DEFENCES, THREATS
from core.engine.stats import mean_std, summarise
from core.engine.storage import PROJECT_ROOT, ResultFile
from core.engine.train import machine
from core.experiments.compare import CompareConfig, build_detectors, score_detectors
from core.experiments.evaluate import accuracy, robust_test_set
from core.experiments.pipeline import ExperimentConfig, ModelCache, Prepared, prepare
from core.threats.poison import PoisonConfig, threat_metrics


def grid_cases() -> dict[str, dict]:
    """Threat case -> its threat and the PoisonConfig values that differ from that threat's defaults, as each registered
    threat declares its cases (ThreatSpec.grid_cases; one case named after the threat when it declares none): a new
    threat, a plugin's included, reaches `python -m core defences` with no other edit."""
    cases = {}
    for spec in THREATS.specs():
        for case, settings in (spec.grid_cases if spec.grid_cases is not None else {spec.name: {}}).items():
            cases[case] = {"threat": spec.name, **{key: value for key, value in settings.items() if key != "adapts"}}
    return cases


def adaptive_cases() -> dict[str, tuple[str, str]]:
    """The cases crafted by an attacker who knows a defence: case -> (the case it adapts, the defence it knows), as the
    threats declare them. Reports read it to put the adaptive attacker's result beside the defence's."""
    return {
        case: settings["adapts"]
        for spec in THREATS.specs()
        for case, settings in (spec.grid_cases or {}).items()
        if "adapts" in settings
    }


REFERENCES = ("clean_reference", "none", "oracle")


@dataclass(frozen=True)
class DefenceGridConfig:
    experiment: ExperimentConfig
    cases: tuple[str, ...] | None = None  # None: every case of grid_cases()
    defences: tuple[str, ...] | None = None  # names in core.engine.registry.DEFENCES; None: all
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    seeds: tuple[int, ...] = (0,)
    robust_test_subset: float = 0.3  # share of the test set attacked for the adaptive worst case
    robust_steps: int = 10
    # forward passes averaged per attack step on a model with test-time noise (core.attacks.robust: EOT); 1: one pass
    eot_samples: int = 1

    def __post_init__(self):
        if self.cases is None:
            object.__setattr__(self, "cases", tuple(grid_cases()))
        if self.defences is None:
            object.__setattr__(self, "defences", DEFENCES.names())
        for kind, allowed, values in (
            ("threat case", tuple(grid_cases()), self.cases),
            ("defence", DEFENCES.names(), self.defences),
        ):
            unknown = [value for value in values if value not in allowed]
            if unknown or not values:
                raise ValueError(f"unknown or missing {kind} {unknown}: choose from {', '.join(allowed)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct and at least one")
        if not 0 < self.robust_test_subset <= 1 or self.robust_steps < 1:
            raise ValueError("robust_test_subset must be in (0, 1] and robust_steps >= 1")
        if self.eot_samples < 1:
            raise ValueError(f"eot_samples must be >= 1, got {self.eot_samples}")

    def poison_for(self, case: str, seed: int) -> PoisonConfig:
        changes = dict(grid_cases()[case])
        return replace(self.experiment.poison.with_threat(changes.pop("threat")), seed=seed, **changes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["experiment"] = self.experiment.to_dict()
        data["defence"] = self.defence.to_dict()  # "knobs" only when one is set: older grids keep their cells
        if self.eot_samples == 1:  # likewise grids made before EOT existed
            del data["eot_samples"]
        data["case_settings"] = {case: self.poison_for(case, 0).to_dict() for case in self.cases}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DefenceGridConfig":
        """The config of a grid file (its "config"): what `python -m core defences` would rerun it with."""
        return cls(
            ExperimentConfig.from_dict(data["experiment"]),
            cases=tuple(data["cases"]),
            defences=tuple(data["defences"]),
            defence=DefenceConfig.from_dict(data["defence"]),
            seeds=tuple(data["seeds"]),
            robust_test_subset=data["robust_test_subset"],
            robust_steps=data["robust_steps"],
            eot_samples=data.get("eot_samples", 1),
        )


def defended_training(
    name: str, train: ImageSet, context: DefenceContext, config: DefenceConfig
) -> tuple[ImageSet, nn.Module | None]:
    """What defence `name` makes of the training set, and the module every test input goes through (None: raw inputs).
    A defence with an input_transform (a purifier) passes the training images through the very module it puts
    before the classifier at test time."""
    spec = DEFENCES[name]
    data = spec.apply(train, context, config)
    if spec.input_transform is not None:
        transform = spec.input_transform(data, context, config)
        return ImageSet(purified(transform, data.images), data.labels), transform
    return data, spec.test_input(config) if spec.test_input is not None else None


def defended_model(
    prepared: Prepared, name: str, config: DefenceConfig, context: DefenceContext, clean: bool = False
) -> tuple[nn.Module, int]:
    """The classifier trained behind defence `name` (cached), and how many images it trained on. A defence that
    repairs a trained classifier (after_training) starts from the undefended one. clean: behind the defence on the
    clean training set instead of the poisoned one (core.experiments.blind chooses settings so), repairing the clean
    reference."""
    spec = DEFENCES[name]
    key = config.key(name)
    if clean:
        training, role, upstream_key = prepared.splits.train, "clean_reference", prepared.data_key
    else:
        training, role, upstream_key = prepared.poisoned.data, "undefended", prepared.poison_key
    if spec.after_training is not None:
        undefended, undefended_name = prepared.classifier(role, training, role, upstream_key)
        model = context.cached(
            f"defence_{name}",
            {**key, "from": undefended_name},
            lambda: copy.deepcopy(undefended),
            lambda: spec.after_training(undefended, training, context, config),
        )
        return model.eval(), len(training)
    data, test_input = defended_training(name, training, context, config)
    adversary = (key, spec.adversary(config)) if spec.adversary else None
    upstream = {"poison": upstream_key, **key, "data": data.digest()}
    # The undefended model's seed: defended and undefended differ only in what the defence did.
    model, _ = prepared.classifier(f"defence_{name}", data, role, upstream, adversary=adversary)
    if test_input is not None:
        model = nn.Sequential(test_input, model).eval()
    return model, len(data)


def defence_context(prepared: Prepared, experiment: ExperimentConfig, cache: ModelCache, report=None) -> DefenceContext:
    """The defender's DAE, trusted images and classifier recipe, and each detector's drop decision on the training
    set (the DAE's from the run's threshold; any other detector built and thresholded the same way on first use)."""
    drop_masks = {"dae": prepared.train_scores > prepared.threshold}

    def drop_mask(detector: str) -> torch.Tensor:
        if detector not in drop_masks:
            settings = CompareConfig(
                experiment, threats=(experiment.poison.threat,), detectors=(detector,), distil=("none",)
            )
            detectors = build_detectors(prepared, (detector,), settings, cache, report)
            _, drops, _ = score_detectors(prepared, detectors, experiment.threshold)
            drop_masks[detector] = drops[detector]
        return drop_masks[detector]

    def cached(role: str, key: dict, build, fit) -> nn.Module:
        model, _ = cache.get(role, {"poison": prepared.poison_key, **key, **recipe_key("classifier")}, build, fit)
        return model

    return DefenceContext(
        prepared.detector.autoencoder,
        drop_mask,
        trusted=prepared.dae_data,
        new_classifier=lambda: Classifier(experiment.classifier),
        train_config=replace(experiment.classifier_train, seed=experiment.seed),
        cached=cached,
    )


def grid_one(
    config: DefenceGridConfig, case: str, seed: int, cache: ModelCache, data_root=None, report=None, should_stop=None
) -> dict:
    """One threat case at one seed: {"poison", "models": {reference or defence: metrics}}."""
    started = time.time()
    report = report or (lambda stage, done, total: None)
    experiment = replace(config.experiment, seed=seed, poison=config.poison_for(case, seed))
    prepared = prepare(experiment, cache, data_root, report, should_stop)
    poisoned, mask, test = prepared.poisoned, prepared.poisoned.poison_mask, prepared.splits.test
    robust_test = robust_test_set(test, config.robust_test_subset, seed)
    robust_config = RobustEvalConfig(
        eps=experiment.eval_attack.eps,
        steps=config.robust_steps,
        temperature=1.0,
        seed=seed,
        eot_samples=config.eot_samples,
    )

    def measure(model: nn.Module, n_train: int) -> dict:
        adaptive = attack_suite(model, robust_test, robust_config.eps, robust_config, transfer_from=prepared.surrogate)
        metrics = {
            "clean_acc": accuracy(model, test.images, test.labels),
            "adaptive_acc": adaptive["worst_case"],
            "n_train": n_train,
            **threat_metrics(model, test, experiment.poison),
        }
        if robust_config.eot_samples > 1 and is_stochastic(model):
            # the same model attacked one pass per step, as grids without EOT do: what EOT takes off the worst case
            one_pass = replace(robust_config, eot_samples=1)
            suite = attack_suite(model, robust_test, one_pass.eps, one_pass, transfer_from=prepared.surrogate)
            metrics["adaptive_acc_one_pass"] = suite["worst_case"]
        return metrics

    models: dict[str, dict | None] = {}
    report("reference models", 0, 3)
    clean_reference, _ = prepared.classifier(
        "clean_reference", prepared.splits.train, "clean_reference", prepared.data_key
    )
    models["clean_reference"] = measure(clean_reference, len(prepared.splits.train))
    undefended, _ = prepared.classifier("undefended", poisoned.data, "undefended", prepared.poison_key)
    models["none"] = measure(undefended, len(mask))
    clean_part = poisoned.data.subset(torch.nonzero(~mask).flatten())
    if len(clean_part) >= experiment.classifier_train.batch_size:  # all of train poisoned: no oracle to train
        oracle, _ = prepared.classifier(
            "oracle", clean_part, "undefended", {"poison": prepared.poison_key, "oracle": True}
        )
        models["oracle"] = measure(oracle, len(clean_part))
    else:
        models["oracle"] = None

    context = defence_context(prepared, experiment, cache, report)
    defence = replace(config.defence, seed=seed)
    for number, name in enumerate(config.defences):
        report("training behind each defence", number, len(config.defences))
        model, n_train = defended_model(prepared, name, defence, context)
        models[name] = measure(model, n_train)
    report("training behind each defence", len(config.defences), len(config.defences))
    return {
        "poison": {
            "case": case,
            "threat": experiment.poison.threat,
            "eps": experiment.poison.eps,
            "fraction": experiment.poison.fraction,
            "n_poisoned": poisoned.n_poisoned,
            "n_train": len(mask),
            **what_squeezing_keeps(prepared.splits.train, poisoned),
        },
        "n_test": len(test),
        "n_robust_test": len(robust_test),
        "models": models,
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
    }


def what_squeezing_keeps(clean: ImageSet, poisoned) -> dict:
    """How much of the poisons' change survives grayscale, in grey levels: the mean absolute change of a channel,
    and of the grayscale image (0 when the change is pure colour at constant luminance; equal for a grey change).
    Why grayscale restores some poisons and not others (issue 24: the anchor's 9.1% under grayscale vs our 80%)."""
    index = torch.nonzero(poisoned.poison_mask).flatten()
    if not len(index):
        return {}
    before, after = clean.images[index], poisoned.data.images[index]
    return {
        "change_levels": float((after.float() - before.float()).abs().mean()),
        "grayscale_change_levels": float((grayscale(after).float() - grayscale(before).float()).abs().mean()),
    }


def finished_runs(config: DefenceGridConfig, previous: dict | None) -> dict[str, dict]:
    """The (seed, case) results of an earlier grid that this one can keep: the seeds and cases this grid asks for,
    made with the same settings in every other respect (the experiment, defences, robust evaluation, and the case's
    own poison settings). A grid with other settings keeps nothing."""
    if previous and "defence" in previous.get("config", {}):  # the defence settings as this code writes them: a
        # grid written before fine_tune's and ABL's settings existed lacks them at their defaults (checkpoints/defences)
        defence = DefenceConfig.from_dict(previous["config"]["defence"]).to_dict()
        previous = {**previous, "config": {**previous["config"], "defence": defence}}
    return finished_cells(config.to_dict(), previous, "cases", "case_settings")


def held_elsewhere(config: DefenceGridConfig, previous: dict | None) -> dict[str, dict]:
    """The cells of `previous` made with this grid's settings for cases or seeds it does not ask for."""
    if not previous:
        return {}
    cases = tuple(case for case in previous.get("config", {}).get("cases", []) if case in grid_cases())
    seeds = tuple(int(seed) for seed in previous.get("runs", {}))
    if not cases or not seeds:
        return {}
    compatible = finished_runs(replace(config, cases=cases, seeds=seeds), previous)
    asked = {str(seed) for seed in config.seeds}
    return {
        seed: {case: result for case, result in results.items() if seed not in asked or case not in config.cases}
        for seed, results in compatible.items()
        if any(seed not in asked or case not in config.cases for case in results)
    }


def grid_cell(config: DefenceGridConfig, case: str, seed: int, cache_dir: str, data_root: str, progress=None) -> dict:
    """One (seed, case) cell of the grid for core.engine.executor: a pure function of its arguments."""
    return grid_one(config, case, seed, ModelCache(cache_dir), data_root, progress)


def defence_grid(
    config: DefenceGridConfig,
    cache_dir="runs/cache",
    data_root=None,
    progress=None,
    on_case=None,
    previous: dict | None = None,
    executor: ExecutorConfig | None = None,
) -> dict:
    """Every case at every seed, then mean and standard deviation over seeds. on_case(partial result) is called
    after each case, so a caller can save what is done; `previous` (an earlier result, e.g. the saved file) gives
    the cases already finished under the same settings, which are kept rather than recomputed. The models are
    cached too, so a grid stopped part-way resumes on the same machine or from its file on another. The cells left
    run on `executor` (core.engine.executor: in this process by default, or on Ray). Cells of `previous` that this grid
    does not ask for (other cases or seeds, made with the same settings) stay in the result and its file: a rerun for
    a few cases never drops the others."""
    runs: dict[str, dict] = finished_runs(config, previous)
    held = held_elsewhere(config, previous)  # {seed: {case: result}} kept but not asked for
    held_cases = [case for cases in held.values() for case in cases]
    described = {*config.cases, *held_cases}
    # the file's own case order first, so that a rerun for a few cases does not reorder its table
    kept_order = [case for case in (previous or {}).get("config", {}).get("cases", []) if case in described]
    whole = replace(  # the grid the result describes: what was asked for and what is held
        config,
        cases=tuple(dict.fromkeys([*kept_order, *config.cases, *held_cases])),
        seeds=tuple(sorted({*config.seeds, *(int(seed) for seed in held)})),
    )

    def result() -> dict:
        every = {seed: {**held.get(seed, {}), **runs.get(seed, {})} for seed in {*held, *runs}}
        ordered = {  # seeds and cases in the config's order, whatever order the cells finished in
            str(seed): {case: every[str(seed)][case] for case in whole.cases if case in every.get(str(seed), {})}
            for seed in whole.seeds
            if every.get(str(seed))
        }
        return {
            "config": whole.to_dict(),
            "runs": ordered,
            **grid_summary(ordered),
            # compute time of every case held, including those kept from `previous`
            "seconds": round(sum(result["seconds"] for results in ordered.values() for result in results.values()), 1),
        }

    run_missing_cells(
        grid_cell,
        config,
        "case",
        config.cases,
        runs,
        worker_paths(cache_dir, data_root),
        executor,
        progress,
        lambda: on_case and on_case(result()),
    )
    return result()


def grid_summary(runs: dict) -> dict:
    """{"summary": case -> mean / std / n over the seeds that finished it, "case_seeds": case -> how many}: a grid
    stopped part-way still summarises every case it finished."""
    cases = list(dict.fromkeys(case for cases in runs.values() for case in cases))
    summary, case_seeds = {}, {}
    for case in cases:
        finished = {seed: {case: cases[case]} for seed, cases in runs.items() if case in cases}
        summary[case] = summarise(finished)[case]
        case_seeds[case] = len(finished)
    return {"summary": summary, "case_seeds": case_seeds}


def threat_label(case: str) -> str:
    settings = grid_cases()[case]
    label = THREATS.label(settings["threat"])
    return f"{label} (eps {settings['eps'] * 255:.0f}/255, all of train)" if "eps" in settings else label


SHIPPED_DEFENCE_GRID = PROJECT_ROOT / "checkpoints" / "defences" / "defences.json"
# The shipped grids the app and README show as one table (merge_grids): the first grid (issue 10: the paper's poisons,
# TAP, unlearnable, label flip, backdoor behind filter / purify / JPEG / grayscale / adversarial training), then issue
# 24's (backdoor removal, purification at train and test time, OPS, CUDA and the poisons crafted through a defence),
# its purifiers attacked with expectation over their noise (purify_eot), abl_drop's cells, issue 38's defences at their
# blind settings (defences_blind) and I-BAU, added after them, at its own (backdoor_i_bau); the best of them,
# grayscale_jpeg, over three seeds (grayscale_jpeg_seeds: merge_grids reads its rows, and the references beside them,
# from the grid with the most seeds).
SHIPPED_DEFENCE_GRIDS = tuple(
    SHIPPED_DEFENCE_GRID.parents[1] / folder / "defences.json"
    for folder in (
        "defences",
        "defences_adaptive",
        "purify_eot",
        "backdoor_drop",
        "defences_blind",
        "backdoor_i_bau",
        "grayscale_jpeg_seeds",
    )
)


# Published clean accuracies on CIFAR-10 / ResNet-18 at eps 8/255, all of train poisoned (issue 10's anchors), shown
# beside ours: different data and model, so they say what to expect, not what to match.
ANCHORS = {
    "tap": {"clean_reference": "94.7%", "none": "8.2%", "jpeg": "83.9%", "grayscale": "9.1%"},
    "unlearnable": {"none": "21.1%", "jpeg": "81.5%", "grayscale": "93.0%"},
    "ops": {"adversarial_training": "9.6%"},
    "cuda": {"grayscale": "20.1%", "adversarial_training": "19-44%"},
    # BackdoorBench (CIFAR-10, BadNets 1%): attack success after each defence
    "backdoor": {"fine_tune": "ASR 1.48%", "abl": "ASR 0%"},
}


REFERENCE_LABELS = {"clean_reference": "clean reference", "none": "no defence", "oracle": "oracle (poisons removed)"}


GRID_COLUMNS = (("clean_acc", "clean"), ("adaptive_acc", "worst case"), ("attack_success_rate", "attack success"))


DEFENCE_GRID_FILE = ResultFile(
    "defences.json", "python -m core defences --out {folder}", ("summary", "runs", "config", "case_seeds")
)


def load_defence_grid(path: str | Path = SHIPPED_DEFENCE_GRID) -> dict | None:
    """defences.json, or None when there is none; a corrupt file raises CheckpointError saying how to remake it."""
    return DEFENCE_GRID_FILE.read(path)


def seeds_of(metrics: dict | None) -> int:
    """How many seeds stand behind a model's numbers in a grid summary (0 for none)."""
    return int(((metrics or {}).get("clean_acc") or {}).get("n", 0))


PAIRED_REFERENCES = ("none", "clean_reference")


def _preferred(name: str, later: dict, earlier: dict) -> bool:
    """Whether model `name` is read from a later grid's case summary rather than an earlier one's (merge_grids)."""
    seeds, seeds_before = seeds_of(later["models"][name]), seeds_of(earlier["models"][name])
    if seeds != seeds_before:
        return seeds > seeds_before
    if name in REFERENCES:
        return len(later["models"]) >= len(earlier["models"])
    return True


def merge_grids(grids: list[dict]) -> dict | None:
    """Several grids of one preset as one: per threat case, every model any grid trained, each (summary and per-seed
    runs alike) from the grid with the most seeds of it (the later grid on ties: newer code; for the reference models,
    the grid that trained the most models of the case, so that a small grid of one or two defences added later does
    not replace the rows every other defence of the case is read against). A case whose poison
    settings differ from an earlier grid's, or a grid of another experiment, is left out rather than mixed.
    `case_seeds` is the most seeds of any model of the case; each model's own count is seeds_of(its metrics). Each
    merged run keeps, per model, the clean accuracy of the references of the grid it came from ("references"), for
    paired gaps."""
    grids = [grid for grid in grids if grid]
    if not grids:
        return None
    experiment = grids[0]["config"]["experiment"]
    settings: dict[str, dict] = {}
    source: dict[tuple[str, str], dict] = {}  # (case, model) -> the grid it is taken from
    for grid in grids:
        if grid["config"]["experiment"] != experiment:
            continue
        for case, summary in grid["summary"].items():
            if (
                settings.setdefault(case, grid["config"]["case_settings"][case])
                != grid["config"]["case_settings"][case]
            ):
                continue
            for name in summary["models"]:
                chosen = source.get((case, name))
                if chosen is None or _preferred(name, grid["summary"][case], chosen["summary"][case]):
                    source[case, name] = grid
    merged = {"config": {"experiment": experiment, "case_settings": {}}, "summary": {}, "case_seeds": {}, "runs": {}}
    for (case, name), grid in source.items():
        merged["config"]["case_settings"][case] = settings[case]
        metrics = grid["summary"][case]["models"][name]
        merged["summary"].setdefault(case, {"models": {}})["models"][name] = metrics
        eot_samples = grid["config"].get("eot_samples", 1)
        if eot_samples > 1 and name in DEFENCES and DEFENCES[name].input_transform is not None:
            # how its worst case was attacked: through the noise of its test-time purifier, with EOT
            merged["summary"][case].setdefault("eot_samples", {})[name] = eot_samples
        merged["case_seeds"][case] = max(merged["case_seeds"].get(case, 0), grid["case_seeds"][case])
        for seed, results in grid["runs"].items():
            if case in results:
                run = merged["runs"].setdefault(seed, {}).setdefault(case, {**results[case], "models": {}})
                run["models"][name] = results[case]["models"].get(name)
                # the references trained beside it (its own grid's): a paired gap compares models of one grid, not
                # a defence with another grid's no-defence model (thread counts and code versions differ)
                own = {ref: (results[case]["models"].get(ref) or {}).get("clean_acc") for ref in PAIRED_REFERENCES}
                run.setdefault("references", {})[name] = own
    return merged


def load_shipped_grids(paths=SHIPPED_DEFENCE_GRIDS) -> dict | None:
    """The shipped grids merged into one (merge_grids), None when there is none; a corrupt file raises
    CheckpointError."""
    return merge_grids([load_defence_grid(path) for path in paths])


def case_label(grid: dict, case: str) -> str:
    """A threat case as a user reads it: 'TAP, 8/255 on 100%' from the settings the grid stored; a poison crafted
    through a defence names it ('TAP through JPEG, ...'): three adaptive TAPs read 'TAP, adaptive' alike."""
    settings = grid["config"]["case_settings"][case]
    label = THREATS.label(settings["threat"])
    base, adaptive, through = label.partition(", adaptive: crafted through ")
    label = f"{base} through {through}" if adaptive else label.split(":")[0]
    if settings["threat"] not in THREATS or "eps" not in THREATS[settings["threat"]].params:  # no L-inf budget
        return f"{label}, {settings['fraction']:.0%}"
    return f"{label}, {settings['eps'] * 255:.1f}/255 on {settings['fraction']:.0%}"


def defence_rows(case: str, case_summary: dict) -> list[dict]:
    """One row per reference model and defence of a case: 'mean ± std' over seeds, and the published anchor. A worst
    case attacked with expectation over a purifier's test-time noise says so ("EOT x8": 8 passes per step)."""
    anchors = ANCHORS.get(case, {})
    has_asr = "attack_success_rate" in (case_summary["models"].get("none") or {})
    eot = case_summary.get("eot_samples", {})
    rows = []
    for name, metrics in case_summary["models"].items():
        row = {"model": DEFENCES.label(name) if name in DEFENCES else REFERENCE_LABELS.get(name, name)}
        row["seeds"] = str(seeds_of(metrics)) if metrics else "-"  # text: a dash where no model could be trained
        for key, title in GRID_COLUMNS:
            if key != "attack_success_rate" or has_asr:
                row[title] = mean_std((metrics or {}).get(key), percent=True) if metrics else "n/a (all poisoned)"
        if metrics and name in eot:
            row["worst case"] += f" (EOT x{eot[name]})"
        row["published (CIFAR-10)"] = anchors.get(name, "")
        rows.append(row)
    return rows


CASE_LABELS = {
    "ifgsm_paper": "I-FGSM, eps 0.01, 10% (the paper's)",
    "ifgsm_8": "I-FGSM, 8/255, all of train",
    "tap": "TAP, 8/255, all of train",
    "unlearnable": "unlearnable, 8/255, all of train",
    "label_flip": "label flip",
    "backdoor": "backdoor (BadNets)",
    "ops": "OPS one-pixel shortcut, all of train",
    "cuda": "CUDA class-wise blur, all of train",
    "unlearnable_grayscale": "unlearnable through grayscale (adaptive), 8/255, all of train",
    "tap_jpeg": "TAP through JPEG (adaptive), 8/255, all of train",
    "tap_lowpass": "TAP through sharpening and a low-pass filter (adaptive), 8/255, all of train",
    "tap_grayscale_jpeg": "TAP through grayscale and JPEG (adaptive), 8/255, all of train",
    "backdoor_heavy": "backdoor (BadNets) on 25%, more than abl_drop drops (adaptive)",
}


def defence_table(grid: dict, defence: str) -> list[dict]:
    """One row per threat case the grid trained behind `defence`, as the app shows it: a readable case, the seeds,
    'mean ± std' of each metric, '-' where a metric does not apply (attack success of an availability poison) or no
    anchor was published; the published column only when some row has one."""
    label = DEFENCES.label(defence) if defence in DEFENCES else REFERENCE_LABELS.get(defence, defence)
    rows = []
    for case, summary in grid["summary"].items():
        if defence not in summary["models"]:
            continue
        row = next(row for row in defence_rows(case, summary) if row["model"] == label)
        rows.append(
            {
                "threat case": CASE_LABELS.get(case, case),
                "seeds": row["seeds"],
                **{title: row.get(title) or "-" for _, title in GRID_COLUMNS},
                "published (CIFAR-10)": row["published (CIFAR-10)"] or "-",
            }
        )
    if all(row["published (CIFAR-10)"] == "-" for row in rows):
        for row in rows:
            del row["published (CIFAR-10)"]
    return rows


def best_defence(case_summary: dict) -> tuple[str, float] | None:
    """The registered defence with the highest mean clean accuracy in a case (references excluded)."""
    scored = [
        (name, metrics["clean_acc"]["mean"])
        for name, metrics in case_summary["models"].items()
        if name in DEFENCES and metrics and metrics.get("clean_acc")
    ]
    return max(scored, key=lambda item: item[1]) if scored else None


def shipped_damage(grid: dict, threat: str, eps: float | None = None, fraction: float | None = None) -> dict | None:
    """What the shipped grid measured for the case of `threat` closest to (eps, fraction) (eps first; a threat without
    an L-inf budget passes eps None; the first case when neither is given): clean accuracy of the clean reference, of
    no defence, and of the best defence, and whether the case is exactly that setting ("matches")."""
    cases = [
        (case, grid["config"]["case_settings"][case])
        for case in grid["summary"]
        if grid["config"]["case_settings"].get(case, {}).get("threat") == threat
    ]
    if not cases:
        return None
    if fraction is not None:  # eps first where it is given (threats without an L-inf budget: the fraction alone)
        cases.sort(
            key=lambda item: (abs(item[1]["eps"] - (eps or 0)) * (eps is not None), abs(item[1]["fraction"] - fraction))
        )
    case, settings = cases[0]
    models = grid["summary"][case]["models"]
    best = best_defence(grid["summary"][case])
    if not (models.get("none") and models.get("clean_reference") and best):
        return None
    same_eps = eps is None or abs(settings["eps"] - eps) < 1e-6
    same = fraction is not None and same_eps and abs(settings["fraction"] - fraction) < 1e-6
    return {
        "case": case,
        "label": CASE_LABELS.get(case, case),
        "eps": settings["eps"],
        "fraction": settings["fraction"],
        "matches": same,
        "n_seeds": grid["case_seeds"][case],
        "preset": grid["config"]["experiment"]["preset"],
        "n_test": next(run[case]["n_test"] for run in grid["runs"].values() if case in run),
        "clean_reference": models["clean_reference"]["clean_acc"]["mean"],
        "none": models["none"]["clean_acc"]["mean"],
        "best": DEFENCES.label(best[0]),
        "best_acc": best[1],
    }


def format_defence_grid(grid: dict) -> str:
    """Per threat case: clean accuracy, adaptive worst case and attack success of each reference and defence."""

    def cell(stat, width=16):
        return f"{mean_std(stat, percent=True):>{width}}"

    lines = []
    for case, result in grid["summary"].items():
        n_seeds = grid["case_seeds"][case]
        models = result["models"]
        has_asr = "attack_success_rate" in (models.get("none") or {})
        lines += ["", f"== {threat_label(case)} ({n_seeds} seed{'s' if n_seeds != 1 else ''}) =="]
        header = f"{'':<24}{'clean':>16}{'worst case':>16}" + (f"{'attack success':>16}" if has_asr else "")
        lines.append(header)
        for name, metrics in models.items():
            keys = ("clean_acc", "adaptive_acc") + (("attack_success_rate",) if has_asr else ())
            lines.append(f"{name:<24}" + "".join(cell((metrics or {}).get(key)) for key in keys))
    return "\n".join(lines)
