"""Background work in the app: start a job (core/jobs.py), show jobs with their progress, cancel and resume them.

The server never trains: every long step is a `python -m core` command run by a job process of its own, which goes
on when the page, the browser or the server goes away. A job's card polls its status file every 2 s while it is
active, and reruns the whole page once when it ends (the page then reads what the job wrote).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import streamlit as st

from core import jobs
from core.detectors.detect import filter_label
from core.engine.registry import STUDIES
from core.experiments.run import SHIPPED_RUN
from core.experiments.sweep import POINTS_FILE
from core.jobs import JobSpec, JobStatus, default_threads
from core.studies import ExecutorOptions
from ui.data import app_dir, data_root, shown

POLL_SECONDS = 2.0
COARSE_SHARES = ("0", "0.1", "0.2", "0.3", "0.4", "0.5")  # a first curve over 0-50% dropped (DAE, random, oracle)
REFINE_SHARES = 6  # then this many more within +-10 points of the share the run's own threshold drops
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
}


def jobs_root() -> Path:
    return app_dir() / "jobs"


def job_threads() -> int:
    """Threads a new job trains with: the sidebar's setting, else one less than the machine has (at least one)."""
    return int(st.session_state.get("job_threads") or default_threads())


def command(name: str, *arguments: str) -> tuple[str, ...]:
    """A `python -m core` command as a job runs it: with the data root, and the sidebar's executor when the study
    takes one (--executor ray runs its cells on the Ray cluster)."""
    flags = [name, *arguments, "--data-root", data_root()]
    if issubclass(STUDIES[name].options, ExecutorOptions) and st.session_state.get("job_executor") == "ray":
        flags += ["--executor", "ray"]
        if address := (st.session_state.get("ray_address") or "").strip():
            flags += ["--ray-address", address]
    return tuple(flags)


def start(
    title: str, kind: str, commands: list[tuple[str, ...]], run_dir: str | None = None, again: bool = False
) -> JobStatus:
    """Submit a job (or find the same one queued, running or done; done is started again with `again`), say so."""
    spec = JobSpec(title, kind, tuple(commands), str(run_dir) if run_dir else None, job_threads())
    job = jobs.submit(jobs_root(), spec, again)
    st.toast(f"{job.state.capitalize()}: {title}", icon=STATE_ICONS.get(job.state))
    return job


def run_folder(config) -> Path:
    """Where the app's run of an ExperimentConfig goes: a readable name (preset, threat, eps, seed) and a short hash of
    the whole config, so other settings never share a folder."""
    p = config.poison
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:6]
    what = p.threat if p.threat != "perturbation" else p.attack
    return app_dir() / "runs" / f"{config.preset}-{what}-eps{p.eps:g}-seed{config.seed}-{digest}"


def sweep_commands(run_dir: str | Path) -> list[tuple[str, ...]]:
    """A run's threshold curve coarse to fine, one seed: DAE, random and oracle at 0-50% dropped, then REFINE_SHARES
    more around the run's own threshold (the second sweep keeps the first's points)."""
    cache = str(app_dir() / "models")
    sweep = ("sweep", "--run-dir", str(run_dir), "--seeds", "1", "--cache-dir", cache, "--drop-shares", *COARSE_SHARES)
    return [command(*sweep), command(*sweep, "--refine", str(REFINE_SHARES))]


def experiment_commands(run_arguments: list[str], out: Path) -> list[tuple[str, ...]]:
    """The run, then its threshold curve (sweep_commands)."""
    cache = str(app_dir() / "models")
    return [command("run", *run_arguments, "--out", str(out), "--cache-dir", cache), *sweep_commands(out)]


def more_seeds_commands(run_dir: str, seeds: int = 3) -> list[tuple[str, ...]]:
    """The same curve (coarse and refined shares) at `seeds` seeds: the points of seed 0 are kept."""
    cache = str(app_dir() / "models")
    sweep = ("sweep", "--run-dir", run_dir, "--seeds", str(seeds), "--cache-dir", cache, "--drop-shares")
    return [command(*sweep, *COARSE_SHARES, "--refine", str(REFINE_SHARES))]


def points_path(run_dir: str) -> Path:
    """Where points trained at a threshold of a run are kept: its points.json; for a shipped run (a read-only demo)
    the app's cache beside it."""
    return (app_dir() / "shipped" / Path(run_dir).name if is_shipped(run_dir) else Path(run_dir)) / POINTS_FILE.name


def trained_points(run_dir: str, score: str | None = None) -> list[dict]:
    """Every single point trained on this run (all scores, or one), read from points_path: kept after any restart."""
    try:
        stored = (POINTS_FILE.read(points_path(run_dir)) or {}).get("points", [])
    except ValueError:  # a damaged file: the pages show no points rather than fail; a new point rewrites it
        return []
    return [point for point in stored if score in (None, point.get("score"))]


def point_job(run_dir: str, score: str, threshold: float, steps: int, temperature: float | None = None) -> JobStatus:
    """Teacher and student at one threshold as a background job (`python -m core point`), kept in points_path."""
    arguments = ["--run-dir", run_dir, "--threshold", repr(float(threshold)), "--score", score, "--steps", str(steps)]
    arguments += ["--out", str(points_path(run_dir))]
    arguments += ["--temperature", repr(float(temperature))] if temperature is not None else []
    at_t = f", T={temperature:g}" if temperature is not None else ""
    title = f"{filter_label(score)} <= {threshold:.5f}{at_t}, {steps:,} steps, on {shown(run_dir)}"
    return start(title, "point", [command("point", *arguments)], run_dir=run_dir)


def is_shipped(run_dir: str) -> bool:
    return Path(run_dir).resolve().parent == SHIPPED_RUN.parent.resolve()


def follow_up(run_dir: str, name: str, what: str, key: str) -> None:
    """A button that runs a run's follow-up command (detectors, robustness, abstain) as a background job, with the
    run's jobs of that kind below it; the shipped runs are read-only demos: the command to run instead."""
    if is_shipped(run_dir):
        st.caption(
            f"`python -m core {name} --run-dir {shown(run_dir)}` makes it (the shipped runs are not changed here)."
        )
        return
    if st.button(f"{what.capitalize()} in the background", key=f"follow-{key}"):
        start(f"{what} of {shown(run_dir)}", name, [command(name, "--run-dir", str(run_dir))], run_dir=str(run_dir))
    jobs_panel(str(run_dir), kind=name, key=key, limit=2)


def active_jobs(run_dir: str | None = None, kind: str | None = None) -> list[JobStatus]:
    return [job for job in jobs.list_jobs(jobs_root(), run_dir, kind) if job.active]


def job_card(job: JobStatus, key: str) -> None:
    """One job: title, state line, progress bar, cancel / resume / remove, and its last log lines."""
    with st.container(border=True):
        st.markdown(f"{STATE_ICONS.get(job.state, '')} **{job.kind}**")
        st.text(job.title)  # may hold a user's values: text, never Markdown
        line = job.describe() + f" · {job.threads} thread{'s' if job.threads > 1 else ''}"
        st.caption(line)
        if job.state == "running" and job.total:
            st.progress(min(job.done / job.total, 1.0))
        if job.state == "failed" and job.error:
            st.error(job.error)
        if job.run_dir:
            st.caption(f"writes into `{shown(job.run_dir)}`")
        buttons = st.columns(3)
        if job.active:
            if buttons[0].button("Cancel", key=f"cancel-{key}-{job.id}", help="Ends the job; what it finished stays"):
                jobs.cancel(jobs_root(), job.id)
                st.rerun()
        else:
            if job.state in ("failed", "cancelled") and buttons[0].button(
                "Resume", key=f"resume-{key}-{job.id}", help="Runs the same commands again; finished work is kept"
            ):
                spec = JobSpec.from_dict(json.loads((jobs_root() / job.id / jobs.JOB_FILE).read_text()))
                jobs.submit(jobs_root(), spec)
                st.rerun()
            if buttons[1].button("Remove from the list", key=f"forget-{key}-{job.id}"):
                jobs.forget(jobs_root(), job.id)
                st.rerun()
        if job.log_tail:
            with st.expander("last log lines"):
                st.code("\n".join(job.log_tail), language=None)


def jobs_panel(run_dir: str | None = None, kind: str | None = None, key: str = "jobs", limit: int = 5) -> None:
    """The jobs of a run (or all), newest first; polls while one is active and reruns the page when one ends."""
    active = bool(active_jobs(run_dir, kind))

    @st.fragment(run_every=POLL_SECONDS if active else None)
    def panel() -> None:
        found = jobs.list_jobs(jobs_root(), run_dir, kind)[:limit]
        for job in found:
            job_card(job, key)
        now_active = {job.id for job in found if job.active}
        seen = st.session_state.setdefault(f"active-{key}", set())
        if seen - now_active:  # a job ended: the page reads what it wrote
            st.session_state[f"active-{key}"] = now_active
            st.rerun()
        st.session_state[f"active-{key}"] = now_active

    panel()


def follow_experiment() -> None:
    """While this session's *Run the experiment* job trains its run, poll (every page: the sidebar calls this) and
    open the run on every page as soon as it is trained; its curve then fills in on the Threshold page."""
    experiment = st.session_state.get("experiment_job")
    if not experiment:
        return

    @st.fragment(run_every=POLL_SECONDS)
    def poll() -> None:
        if (Path(experiment["run_dir"]) / "results.json").exists():
            st.session_state["run_dir"] = experiment["run_dir"]
            st.session_state.pop("experiment_job", None)
            st.rerun()

    poll()


def job_settings() -> None:
    """The sidebar's background-job settings: threads per job, and where its cells run."""
    machine = os.cpu_count() or 1
    st.number_input(
        "Threads per job",
        1,
        machine,
        value=default_threads(),
        key="job_threads",
        help=f"This machine has {machine}. One less (the default) keeps a core for the pages while a job trains; "
        "the command line's `--threads` is the same setting.",
    )
    executor = st.radio(
        "Jobs run",
        ("local", "ray"),
        key="job_executor",
        horizontal=True,
        help="ray: on the Ray cluster (`ray start`, or an address below), one task per cell of a run or sweep",
    )
    if executor == "ray":
        st.text_input("Ray address", key="ray_address", placeholder="auto, or ray://host:10001")
    running = active_jobs()
    if running:
        st.caption(f"{len(running)} job{'s' if len(running) > 1 else ''} queued or running")
    st.page_link("pages/jobs.py", label="All background jobs", icon=":material/work_history:")
