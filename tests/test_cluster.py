"""Beyond one machine, with the real engines: a local Ray instance runs grid cells, a PostgreSQL 15 server started
here holds an Optuna study shared by two worker processes. No mocks of either."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from core.cli import main, parse
from core.detectors.dae import DAEConfig, TuneConfig, config_from_params, load_study_if_any, tune_workers, worker_shares
from core.engine.executor import Cell, ExecutorConfig, GridError, run_cells
from core.engine.models import AutoencoderConfig

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "grid-secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user there."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL 15 cluster in a temporary directory on 127.0.0.1 and a free port, password-protected; stopped
    and removed at the end whatever happened. Fails (never skips) when Debian's postgresql is missing."""
    if not (POSTGRES_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 not found in {POSTGRES_BIN}: apt-get install postgresql (.ci/run does)")
    base = Path(tempfile.mkdtemp(prefix="pg-"))
    data, password_file = base / "data", base / "password"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(password_file, "postgres")
    port = _free_port()
    pg_ctl = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        _as_postgres(
            [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "grid", f"--pwfile={password_file}"]
            + ["--auth=scram-sha-256", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
    subprocess.run(
        _as_postgres(pg_ctl + ["-o", options, "-l", str(base / "log"), "-w", "start"]), check=True, capture_output=True
    )
    try:
        yield f"postgresql://grid:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres(pg_ctl + ["-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _denoising_pairs(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    noise = torch.randint(-8, 9, targets.shape, generator=generator)
    return (targets.int() + noise).clamp(0, 255).to(torch.uint8), targets


def test_two_tune_workers_share_one_postgres_study_and_the_run_applies_its_best(postgres_url):
    inputs, targets = _denoising_pairs()
    base = DAEConfig(model=AutoencoderConfig(depth=2, width=8, latent_dim=32))
    config = TuneConfig(trials=6, storage=postgres_url, study_name="two-workers", epochs_per_trial=2)
    finished = []
    study = tune_workers(inputs, targets, base, config, workers=2, on_trial=lambda n, v: finished.append(n))

    trials = study.trials
    assert len(trials) == 6 and sorted(finished) == [trial.number for trial in trials]
    assert sorted(trial.user_attrs["worker"] for trial in trials) == [0, 0, 0, 1, 1, 1]  # 3 from each process
    assert len({json.dumps(trial.params, sort_keys=True) for trial in trials}) == 6  # distinct parameters
    assert all(trial.state.name in ("COMPLETE", "PRUNED") for trial in trials)

    # Another process (the app, `run --use-best-trial`) reads the same study from the same URL.
    again = load_study_if_any(config)
    assert again.best_trial.number == study.best_trial.number
    from core.studies.run import experiment_of

    _, options, _ = parse(["run", "--use-best-trial", "--storage", postgres_url, "--study", "two-workers"])
    dae = experiment_of(options).dae
    assert dae.model == config_from_params(again.best_params, base).model
    assert dae.train.learning_rate == again.best_params["learning_rate"]


def test_the_apps_optuna_tab_reads_the_study_from_the_same_url(postgres_url, run_directory):
    """After the two workers above: the Autoencoder page's Optuna tab shows that study's best trial; a wrong
    password is a message on the page, not a traceback."""
    from tests.helpers import on_page

    at = on_page(run_directory, "pages/autoencoder.py")
    at.text_input(key="optuna_storage").set_value(postgres_url).run()
    at.text_input(key="optuna_study").set_value("two-workers").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    best = load_study_if_any(TuneConfig(storage=postgres_url, study_name="two-workers")).best_trial
    assert any(f"Best trial #{best.number}" in text.value for text in at.markdown), [m.value for m in at.markdown]
    assert not any(PASSWORD in caption.value for caption in at.caption)  # the URL is shown without its password

    at.text_input(key="optuna_storage").set_value(postgres_url.replace(PASSWORD, "not-it")).run()
    assert not at.exception
    assert any("password authentication failed" in error.value for error in at.error)


@pytest.mark.parametrize(
    "storage, says",
    [
        ("wrong_password", "password authentication failed"),
        ("closed_port", "cannot open the Optuna storage at postgresql://grid:***@127.0.0.1:"),
        ("ftp://nowhere/db", "unsupported Optuna storage"),
    ],
)
def test_a_bad_storage_url_is_one_error_line_before_any_work(postgres_url, storage, says, capsys, tmp_path):
    url = {
        "wrong_password": postgres_url.replace(PASSWORD, "not-it"),
        "closed_port": f"postgresql://grid:{PASSWORD}@127.0.0.1:{_free_port()}/postgres",
    }.get(storage, storage)
    code = main(["tune", "--trials", "2", "--storage", url, "--cache-dir", str(tmp_path / "cache")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and says in error and len(error.splitlines()) == 1
    assert PASSWORD not in error and not (tmp_path / "cache").exists()  # no password shown, nothing computed


def test_worker_shares_cap_the_study_at_the_asked_trials():
    assert worker_shares(7, 3) == [3, 2, 2] and sum(worker_shares(200, 8)) == 200
    with pytest.raises(ValueError, match="at least as many trials"):
        worker_shares(2, 3)


def test_a_journal_file_study_resumes_across_calls(tmp_path):
    inputs, targets = _denoising_pairs(64)
    base = DAEConfig(model=AutoencoderConfig(depth=2, width=8, latent_dim=32))
    config = TuneConfig(trials=2, storage=f"journal:///{tmp_path}/study.log", epochs_per_trial=1)
    tune_workers(inputs, targets, base, config, workers=1)
    assert len(tune_workers(inputs, targets, base, config, workers=1).trials) == 4


GRID = [
    "defences",
    "--cases",
    "backdoor",
    "label_flip",
    "--defences",
    "jpeg",
    "--train-subset",
    "0.04",
    "--test-subset",
    "0.02",
    "--epochs",
    "1",
    "--dae-epochs",
    "1",
    "--defender-epochs",
    "1",
    "--robust-test-subset",
    "0.5",
    "--robust-steps",
    "2",
]


def _without_times(value):
    if isinstance(value, dict):
        return {key: _without_times(item) for key, item in value.items() if key != "seconds"}
    return value


def test_a_grid_on_a_local_ray_instance_equals_the_local_executor(gtsrb_root, tmp_path):
    import ray

    outputs = {}
    for executor in ("local", "ray"):
        cache = tmp_path / f"cache_{executor}"  # separate caches: both executors really train every model
        argv = GRID + ["--data-root", str(gtsrb_root), "--out", str(tmp_path / executor), "--cache-dir", str(cache)]
        assert main(argv + ["--executor", executor, "--cpus-per-cell", "2"]) == 0
        outputs[executor] = json.loads((tmp_path / executor / "defences.json").read_text())
    try:
        assert ray.is_initialized() and ray.cluster_resources().get("CPU", 0) >= 1  # a real Ray instance ran it
    finally:
        ray.shutdown()
    assert set(outputs["ray"]["runs"]["0"]) == {"backdoor", "label_flip"}
    assert _without_times(outputs["ray"]) == _without_times(outputs["local"])  # same numbers, same JSON
    weights = sorted(path.name for path in (tmp_path / "cache_local").glob("*.safetensors"))
    assert weights and weights == sorted(path.name for path in (tmp_path / "cache_ray").glob("*.safetensors"))
    for name in weights:  # same models, byte for byte
        assert (tmp_path / "cache_local" / name).read_bytes() == (tmp_path / "cache_ray" / name).read_bytes()


def _flaky(value: int, marker: str, progress=None) -> dict:
    """Fails the first time it is called with a marker file absent, then succeeds: a transient failure."""
    if value < 0:
        raise ValueError(f"negative value {value}")
    if not Path(marker).exists():
        Path(marker).write_text("failed once")
        raise RuntimeError("transient")
    return {"value": value * 2}


def test_a_failed_cell_is_retried_once_and_reported_with_its_config_while_the_others_finish(tmp_path, capsys):
    cells = [
        Cell("transient", _flaky, {"value": 1, "marker": str(tmp_path / "a")}),
        Cell("broken", _flaky, {"value": -1, "marker": str(tmp_path / "b")}),
        Cell("fine", _flaky, {"value": 3, "marker": str(tmp_path / "a")}),
    ]
    saved = {}
    with pytest.raises(GridError, match=r"1 of 3 cells failed twice: broken .*'value': -1.*negative value -1"):
        run_cells(cells, ExecutorConfig("local", cpus_per_cell=1), on_result=saved.__setitem__)
    assert saved == {"transient": {"value": 2}, "fine": {"value": 6}}
    printed = capsys.readouterr().err
    assert "attempt 1" in printed and "attempt 2" in printed and "transient" in printed


def test_a_failing_ray_cell_is_retried_and_named(tmp_path):
    """On Ray too: a cell that cannot find its dataset fails on the worker, runs twice, and is named in the error."""
    import ray

    from core.experiments.defence_grid import DefenceGridConfig, grid_cell
    from tests.helpers import tiny_config

    config = DefenceGridConfig(tiny_config(), cases=("backdoor",), defences=("jpeg",))
    arguments = {"config": config, "case": "backdoor", "seed": 0, "cache_dir": str(tmp_path), "data_root": "/nowhere"}
    try:
        with pytest.raises(GridError, match=r"1 of 1 cells failed twice: seed 0 backdoor .*GTSRB train split not"):
            run_cells([Cell("seed 0 backdoor", grid_cell, arguments)], ExecutorConfig("ray", cpus_per_cell=1))
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--executor", "local", "--ray-address", "auto"], "need --executor ray"),
        (["--executor", "ray", "--ray-address", "http://x"], "Ray address must be"),
        (["--executor", "ray", "--cpus-per-cell", "0"], "cpus per cell must be >= 1"),
        (["--executor", "ray", "--gpus-per-cell", "-1"], "gpus per cell must be in [0, 8]"),
        (["--executor", "ray", "--ray-address", "auto"], "cannot reach a Ray cluster at auto"),
    ],
)
def test_bad_executor_options_are_one_error_line(gtsrb_root, tmp_path, argv, says, capsys):
    code = main(["defences", "--cases", "backdoor", "--out", str(tmp_path / "grid"), *argv])
    error = capsys.readouterr().err.strip()
    assert code == 2 and says in error and len(error.splitlines()) == 1
    assert not (tmp_path / "grid").exists()  # nothing half-written


def test_run_seeds_on_ray_writes_the_same_runs_as_the_local_executor(gtsrb_root, tmp_path):
    """`run --seeds 2`: a cell per seed; each seed's run and the mean +- std over seeds match across executors."""
    import ray

    tiny = ["--preset", "quick", "--train-subset", "0.04", "--test-subset", "0.02", "--epochs", "1"]
    tiny += ["--dae-epochs", "1", "--defender-epochs", "1", "--seeds", "2", "--data-root", str(gtsrb_root)]
    summaries = {}
    for executor in ("local", "ray"):
        out, cache = tmp_path / executor, tmp_path / f"cache_{executor}"
        argv = ["run", *tiny, "--out", str(out), "--cache-dir", str(cache), "--executor", executor]
        assert main(argv + ["--cpus-per-cell", "1"]) == 0
        assert sorted(path.name for path in out.iterdir()) == ["seed0", "seed1", "seeds.json"]
        summaries[executor] = json.loads((out / "seeds.json").read_text())
    ray.shutdown()
    assert _without_times(summaries["ray"]) == _without_times(summaries["local"])
    for seed in ("seed0", "seed1"):
        local, remote = (json.loads((tmp_path / e / seed / "results.json").read_text()) for e in ("local", "ray"))
        assert _without_times(local) == _without_times(remote)
