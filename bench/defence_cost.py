"""What each training-time defence costs, as a ratio to one plain training, side by side in one run (issue 38's
"at most 3x the cost of one training").

    python bench/defence_cost.py [--preset compare] [--train-subset 0.1] [--defences ...] [--out FILE] [--tiny]

On the preset's clean training split (a stratified --train-subset of GTSRB's train split), one seed, a fresh model
cache: the plain classifier is trained once (the undefended model every defence is compared with), then each defence
trains its classifier on the same images as `python -m core defences` would (its fitted parts: purifier, projection,
isolation model; a defence that repairs a trained classifier counts the plain training it starts from plus its
repair). The unit is the plain training timed before the defences (a second one after them is printed: how much the
machine drifted). Prints and writes (JSON, after every defence) seconds and seconds / plain for each, with threads.
Nothing else should run beside it. --tiny: the tiny preset and two defences, so CI checks that it runs and prints.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.defences import DefenceConfig  # noqa: E402
from core.engine.registry import DEFENCES  # noqa: E402
from core.engine.storage import write_json  # noqa: E402
from core.experiments.defence_grid import defence_context, defended_model  # noqa: E402
from core.experiments.pipeline import ModelCache, prepare, preset  # noqa: E402


def measure(experiment, defences, settings: DefenceConfig, data_root, out: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = ModelCache(cache_dir)
        prepared = prepare(experiment, cache, data_root)
        context = defence_context(prepared, experiment, cache)

        def plain_training(number: int) -> float:
            """One plain training, timed (a key of its own, so it trains)."""
            started = time.perf_counter()
            key = {**prepared.data_key, "timing": number}
            prepared.classifier("clean_reference", prepared.splits.train, "clean_reference", key)
            return time.perf_counter() - started

        # the plain training is timed before and after the defences; their mean is the unit (it brackets any drift)
        plain_before = plain_training(1)
        plain = plain_before
        result = {
            "preset": experiment.preset,
            "train_images": len(prepared.splits.train),
            "threads": torch.get_num_threads(),
            "plain_seconds": round(plain, 2),
            "defences": {},
        }
        for name in defences:
            started = time.perf_counter()
            defended_model(prepared, name, replace(settings, seed=experiment.seed), context, clean=True)
            seconds = time.perf_counter() - started
            # a repair starts from the plain model (trained above, so loaded here): its cost includes that training
            total = seconds + (plain if DEFENCES[name].after_training is not None else 0.0)
            result["defences"][name] = {"seconds": round(total, 2), "ratio": round(total / plain, 2)}
            print(f"{name:<24} {total:8.1f} s  {total / plain:5.2f}x plain", flush=True)
            if out:
                write_json(out, result)
        plain_after = plain_training(2)
        result.update(plain_seconds_before=round(plain_before, 2), plain_seconds_after=round(plain_after, 2))
        print(f"plain training before the defences {plain_before:.1f} s, after {plain_after:.1f} s")
        if out:
            write_json(out, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="compare")
    parser.add_argument("--train-subset", type=float, default=0.1)
    parser.add_argument("--defences", nargs="+", default=None)
    parser.add_argument(
        "--blind",
        type=Path,
        nargs="+",
        default=sorted(Path("checkpoints").glob("blind*/settings.json")),
        help="settings.json files of python -m core blind: the settings the grids froze (default: every "
        "checkpoints/blind*/settings.json)",
    )
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    from core.experiments.blind import BLIND_FILE

    experiment = preset("tiny" if args.tiny else args.preset)
    if not args.tiny:
        experiment = replace(experiment, train_subset=args.train_subset)
    defences = args.defences or (["jpeg", "grayscale_noise"] if args.tiny else list(DEFENCES.names()))
    files = [path for path in args.blind if path.exists()]
    chosen = {name: value for path in files for name, value in BLIND_FILE.read(path)["knobs"].items()}
    settings = DefenceConfig(knobs=tuple(chosen.items()))
    print(
        f"defence cost on {experiment.preset} ({'tiny' if args.tiny else f'train subset {args.train_subset}'}), "
        f"{torch.get_num_threads()} threads, one seed, nothing cached; settings: "
        f"{'blind, from ' + ', '.join(map(str, files)) if files else 'defaults'}"
    )
    result = measure(experiment, defences, settings, args.data_root, args.out)
    print(f"plain training (the unit): {result['plain_seconds']:.1f} s on {result['train_images']:,} images")


if __name__ == "__main__":
    main()
