"""`python -m core blind`: each defence's setting chosen on clean data, before any grid sees a poison
(core/experiments/blind.py computes; settings.json in --out, which `python -m core defences --blind` reads)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.experiments.blind import BLIND_FILE, blind_settings, blindly_tunable, format_blind_settings
from core.experiments.pipeline import preset
from core.studies import RUNS_DIR, STUDIES, DataOptions, Stages, StudySpec, option
from core.studies.run import PRESETS


def _tunable() -> tuple[str, ...]:
    return blindly_tunable()


@dataclass(frozen=True)
class BlindOptions:
    preset: str = option(
        "compare", "the experiment whose clean training split and trusted slice decide", choices=PRESETS
    )
    defences: tuple[str, ...] | None = option(
        None, "defences to set (default: every one that declares a strength)", choices=_tunable
    )
    seed: int = option(0, "the split, the models' initialisation and the defences' randomness")
    out: Path = option(RUNS_DIR / "blind", "folder for settings.json")
    cache_dir: Path = option(RUNS_DIR / "cache", "trained-model cache")

    def __post_init__(self):
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")


def main(options: BlindOptions, data: DataOptions) -> int:
    out = options.out / BLIND_FILE.name
    experiment = replace(preset(options.preset), seed=options.seed)
    defences = tuple(options.defences or _tunable())
    with Stages() as stages:
        settings = blind_settings(experiment, defences, options.cache_dir, data.data_root, stages)
    BLIND_FILE.write(out, settings)
    print(format_blind_settings(settings))
    flags = " ".join(
        f"--{name.replace('.', '-').replace('_', '-')} {value:g}" for name, value in settings["knobs"].items()
    )
    print(f"\nsettings: {out}  ({settings['seconds']:.0f} s); frozen for a grid by `defences --blind {out}` ({flags})")
    return 0


STUDIES.register(
    StudySpec(
        "blind",
        "each defence's setting chosen on clean data before any poison: the strongest within 2 points",
        BlindOptions,
        main,
        writes=(BLIND_FILE,),
    )
)
