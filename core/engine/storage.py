"""Artifacts on disk: safetensors weights plus a JSON of config and metrics, written atomically.

Nothing here ever unpickles: a checkpoint a user hands us can at worst fail to load, never run code.
An artifact is addressed by a hash of its config, so an identical rerun finds and reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file

# the project's folder (checkpoints/, examples/, docs/): the one place that knows where core/ sits in it
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model it is loaded into."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path) on a temp file beside path, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


@dataclass(frozen=True)
class ResultFile:
    """A study's JSON file, one pattern for every study (STUDIES: StudySpec.writes): its name, the command that remakes
    it, the top-level keys every reader needs and `upgrade`, which reads an older shape into today's and checks what
    lies deeper (raising KeyError / TypeError / AttributeError when it is not there). read(): None for a missing file
    (a CheckpointError saying how to make it when the file is required), a CheckpointError naming the command for one
    that is corrupt or from another tool; write(): atomic, so a reader never sees half a file."""

    name: str  # e.g. "compare.json"
    remake: str  # the command that writes it; "{folder}" stands for the file's folder
    required: tuple[str, ...] = ()
    upgrade: Callable[[dict], dict] = lambda data: data

    def read(self, path: str | Path, missing_ok: bool = True) -> dict | None:
        path = Path(path)
        command = self.remake.format(folder=path.parent)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object was expected, found {type(data).__name__}")
            missing = [key for key in self.required if key not in data]
            if missing:
                raise KeyError(", ".join(missing))
            return self.upgrade(data)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise CheckpointError(f"no {self.name} at {path}: run `{command}`") from None
        except (IsADirectoryError, NotADirectoryError):
            raise CheckpointError(f"{path} is not a {self.name} file (a folder, or under a file)") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
            if path.name != self.name:  # /etc/passwd given as a comparison: not "rerun compare --out /etc"
                what = self.remake.split(" --")[0]
                raise CheckpointError(f"{path} is not a {self.name} ({error!r}): give one `{what}` wrote") from None
            raise CheckpointError(f"{path} is corrupt or from another tool ({error!r}); rerun `{command}`") from None

    def write(self, path: str | Path, data: dict) -> None:
        write_json(path, data)


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-able config dict."""
    canonical = json.dumps(config, sort_keys=True, default=_json_default)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def save_model(
    directory: str | Path, name: str, model: torch.nn.Module, config: dict, metrics: dict | None = None
) -> Path:
    """Write <directory>/<name>.safetensors and <name>.json; returns the weights path."""
    directory = Path(directory)
    weights = directory / f"{name}.safetensors"
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, str(tmp)))
    write_json(directory / f"{name}.json", {"name": name, "config": config, "metrics": metrics or {}})
    return weights


def model_bytes(model: torch.nn.Module) -> bytes:
    """A model's weights as a safetensors file's bytes (for a download; never a pickle)."""
    return save({name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()})


def load_weights(directory: str | Path, name: str, model: torch.nn.Module) -> torch.nn.Module:
    """Load <name>.safetensors into model (strictly); raise CheckpointError with a clear message."""
    path = Path(directory) / f"{name}.safetensors"
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} is missing")
    try:
        state = load_file(str(path))
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a safetensors file ({error}): restore it, or rerun what made it"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit this model ({first_line})") from None
    return model


def has_model(directory: str | Path, name: str) -> bool:
    directory = Path(directory)
    return (directory / f"{name}.safetensors").exists() and (directory / f"{name}.json").exists()


def set_aside(directory: str | Path, name: str, error: Exception) -> None:
    """Move a corrupt cache entry's files (<name>.*) to <name>.corrupt-<time>.* and say so on stderr: a corrupt entry
    is evidence of a crash or a full disk, so it is kept, never trusted, and the caller rebuilds it."""
    directory = Path(directory)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in directory.glob(f"{name}.*"):
        if ".corrupt-" not in path.name:
            path.rename(path.with_name(f"{name}.corrupt-{stamp}{path.suffix}"))
    print(
        f"note: cache entry {directory / name} was corrupt ({error}); moved aside as *.corrupt-{stamp}.*, "
        "rebuilding it",
        file=sys.stderr,
    )
