"""Drawn road signs for the Your images page: a domain-shift example the project can ship (made here, no licence).

They are not GTSRB and not photos: flat-coloured signs at a slant on a sky / hedge / road background, with a pole,
blur and sensor noise, each at a different size and angle. A model trained on GTSRB crops sees a different
distribution; the page shows what its verdicts and confidences look like there.

Regenerate the shipped files (deterministic): `python -m core.reporting.sign_examples` -> examples/signs/*.png.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from core.engine.data import CLASS_NAMES
from core.engine.storage import PROJECT_ROOT
from core.experiments.run import Run
from core.reporting.images import image_verdicts, read_upload

SIGNS_DIR = PROJECT_ROOT / "examples" / "signs"
SIZE = 96  # pixels of a shipped example (the models see 32x32 after the upload path's resize)
RED, WHITE, BLUE, YELLOW, BLACK = (200, 16, 32), (245, 245, 245), (20, 70, 170), (250, 200, 0), (20, 20, 20)


def _polygon(sides: int, radius: float, centre: float, rotation: float = 0.0) -> list[tuple[float, float]]:
    return [
        (
            centre + radius * math.cos(rotation + 2 * math.pi * k / sides),
            centre + radius * math.sin(rotation + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


def _text(draw: ImageDraw.ImageDraw, text: str, size: int, centre: float, fill) -> None:
    font = ImageFont.load_default(size=size)
    draw.text((centre, centre), text, fill=fill, font=font, anchor="mm")


def _face(kind: str, side: int = 256) -> Image.Image:
    """The sign's face on a transparent square."""
    face = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(face)
    c, r = side / 2, side * 0.47
    if kind == "stop":
        draw.polygon(_polygon(8, r, c, math.pi / 8), fill=WHITE)
        draw.polygon(_polygon(8, r * 0.92, c, math.pi / 8), fill=RED)
        _text(draw, "STOP", int(side * 0.27), c, WHITE)
    elif kind in ("speed_30", "speed_60"):
        draw.ellipse((c - r, c - r, c + r, c + r), fill=RED)
        draw.ellipse((c - r * 0.78, c - r * 0.78, c + r * 0.78, c + r * 0.78), fill=WHITE)
        _text(draw, kind.split("_")[1], int(side * 0.42), c, BLACK)
    elif kind == "no_entry":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=RED)
        draw.rectangle((c - r * 0.7, c - r * 0.17, c + r * 0.7, c + r * 0.17), fill=WHITE)
    elif kind == "yield":
        draw.polygon(_polygon(3, r, c, math.pi / 2), fill=RED)
        draw.polygon(_polygon(3, r * 0.62, c, math.pi / 2), fill=WHITE)
    elif kind == "general_caution":
        draw.polygon(_polygon(3, r, c, -math.pi / 2), fill=RED)
        draw.polygon(_polygon(3, r * 0.7, c, -math.pi / 2), fill=WHITE)
        _text(draw, "!", int(side * 0.4), c + side * 0.05, BLACK)
    elif kind == "priority_road":
        draw.polygon(_polygon(4, r, c), fill=WHITE)
        draw.polygon(_polygon(4, r * 0.7, c), fill=YELLOW)
    elif kind == "keep_right":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=BLUE)
        draw.line((c - r * 0.35, c - r * 0.35, c + r * 0.3, c + r * 0.3), fill=WHITE, width=int(side * 0.09))
        tip = (c + r * 0.45, c + r * 0.45)
        draw.polygon([tip, (tip[0] - r * 0.45, tip[1]), (tip[0], tip[1] - r * 0.45)], fill=WHITE)
    else:
        raise ValueError(f"unknown sign {kind!r}; one of {', '.join(SIGNS)}")
    return face


def _background(rng: np.random.Generator) -> np.ndarray:
    """Sky above, a hedge, then road: smooth gradients with texture, HWC float in [0, 255]."""
    rows = np.linspace(0, 1, SIZE)[:, None, None]
    sky = np.array([120, 170, 225]) + rng.normal(0, 8, 3)
    hedge = np.array([50, 95, 40]) + rng.normal(0, 8, 3)
    road = np.array([95, 95, 100]) + rng.normal(0, 6, 3)
    horizon, kerb = rng.uniform(0.35, 0.55), rng.uniform(0.75, 0.85)
    image = np.where(rows < horizon, sky * (1 - 0.3 * rows), np.where(rows < kerb, hedge, road))
    texture = rng.normal(0, 1, (SIZE // 8, SIZE // 8, 1))
    texture = np.kron(texture, np.ones((8, 8, 1)))
    return np.broadcast_to(image, (SIZE, SIZE, 3)) + 12 * texture * (rows >= horizon)


def draw_sign(kind: str, seed: int) -> Image.Image:
    """One example: the sign at a random scale, position and slant on a background, blurred, with noise."""
    rng = np.random.default_rng(seed)
    canvas = Image.fromarray(np.clip(_background(rng), 0, 255).astype(np.uint8)).convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    scale = rng.uniform(0.45, 0.8)
    side = int(SIZE * scale)
    left, top = int(rng.uniform(0, SIZE - side)), int(rng.uniform(0, (SIZE - side) * 0.6))
    pole_x = left + side // 2
    draw.rectangle((pole_x - 2, top + side // 2, pole_x + 2, SIZE), fill=(130, 130, 135, 255))
    face = _face(kind).rotate(rng.uniform(-12, 12), resample=Image.BICUBIC)
    squeeze = rng.uniform(0.75, 1.0)  # seen from the side: narrower than tall
    face = face.resize((max(1, int(side * squeeze)), side), Image.LANCZOS)
    canvas.alpha_composite(face, (left + (side - face.width) // 2, top))
    image = canvas.convert("RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    pixels = np.asarray(image, dtype=np.float64) * rng.uniform(0.7, 1.1) + rng.normal(0, 4, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


# file stem -> (what it is, GTSRB class index); two views of each sign
SIGNS = {
    "stop": 14,
    "speed_30": 1,
    "speed_60": 3,
    "no_entry": 17,
    "yield": 13,
    "general_caution": 18,
    "priority_road": 12,
    "keep_right": 38,
}
EXAMPLES = {
    f"{kind}_{view}": (kind, CLASS_NAMES[index], 1000 * index + view)
    for kind, index in SIGNS.items()
    for view in (1, 2)
}


def shipped_examples() -> dict[str, tuple[Path, str]]:
    """name -> (path of the shipped PNG, its true GTSRB class name), for the files that exist."""
    return {
        name: (SIGNS_DIR / f"{name}.png", label)
        for name, (_, label, _) in EXAMPLES.items()
        if (SIGNS_DIR / f"{name}.png").exists()
    }


def write_examples(directory: Path = SIGNS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (kind, _, seed) in EXAMPLES.items():
        path = directory / f"{name}.png"
        draw_sign(kind, seed).save(path, "PNG", optimize=False)
        paths.append(path)
    return paths


def evaluate(run_dir) -> dict:
    """The run's student and undefended model on the shipped drawn signs: right answers, the DAE filter's and the
    MC-dropout verdicts (the Your images page's numbers, for all of them at once)."""
    run = Run.load(run_dir)
    models = {role: run.classifier(role) for role in ("filter_distillation", "undefended")}
    autoencoder = run.autoencoder()
    rows = []
    for name, (path, label) in shipped_examples().items():
        x = read_upload(path.read_bytes(), path.name)
        view = image_verdicts(
            x, run, autoencoder, models["filter_distillation"], models["undefended"], None, run.threshold
        )
        rows.append(
            {
                "name": name,
                "label": label,
                "student_right": view["student_top"][0][0] == label,
                "student_p": view["student_top"][0][1],
                "undefended_right": view["undefended_top"][0][0] == label,
                "dae_dropped": view["dae_dropped"],
                "abstain": view.get("abstain"),
            }
        )
    return {"run": str(run_dir), "n": len(rows), "rows": rows}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.reporting.sign_examples")
    parser.add_argument("--evaluate", metavar="RUN_DIR", help="score a run's models on the shipped examples instead")
    args = parser.parse_args()
    if args.evaluate:
        report = evaluate(args.evaluate)
        rows = report["rows"]
        for row in rows:
            print(
                f"{row['name']:<20}{row['label']:<40} student {'right' if row['student_right'] else 'wrong'} "
                f"(p {row['student_p']:.4f}), undefended {'right' if row['undefended_right'] else 'wrong'}, "
                f"DAE {'dropped' if row['dae_dropped'] else 'kept'}, MC dropout "
                f"{'-' if row['abstain'] is None else 'abstains' if row['abstain'] else 'answers'}"
            )
        wrong_sure = [row for row in rows if not row["student_right"] and row["student_p"] > 0.99]
        print(
            f"{report['n']} drawn signs: student right on {sum(r['student_right'] for r in rows)}, undefended on "
            f"{sum(r['undefended_right'] for r in rows)}; DAE drops {sum(r['dae_dropped'] for r in rows)}; MC dropout "
            f"abstains on {sum(bool(r['abstain']) for r in rows)} (of them wrong: "
            f"{sum(bool(r['abstain']) and not r['student_right'] for r in rows)}); student wrong with p > 0.99 on "
            f"{len(wrong_sure)}"
        )
    else:
        for written in write_examples():
            print(written)
