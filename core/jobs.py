"""Background jobs: long work as its own process, which the app starts, watches and cancels, and never runs itself.

A job is one or more command lines of `python -m core` (a run, then its sweep, ...), run in order by
`python -m core.jobs <folder>` in a process of its own session: closing the page, the browser or the app's server
does not end it. Its folder, <root>/<id>/, holds
  job.json     what to run (the commands, a title, the run folder it writes into), written once
  status.json  what the job process is doing: state, command n of N, stage, done / total, timings log.txt      the
  process's stdout and stderr lock         held (flock) by the job process for as long as it lives: free + not finished
  = it was killed cancel       present once someone asked to cancel it
The id is a hash of the commands, so two sessions, or two app servers on the same cache, asking for the same work get
the same job; submitting under <root>/submit.lock makes the check and the start one step. Jobs wait for one of the
machine's job slots (<root>/slot-K.lock) in the order the kernel grants them; a queued job is a waiting process.

Every command keeps its finished work (the model cache, a sweep's points, written after each), so a failed, killed
or cancelled job resumes by being submitted again: the same commands skip what is done.
Nothing here knows about Streamlit.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from core import cli
from core.engine.storage import PROJECT_ROOT, write_json
from core.studies import Stages

JOB_FILE, STATUS_FILE, LOG_FILE, LOCK_FILE, CANCEL_FILE = "job.json", "status.json", "log.txt", "lock", "cancel"
FINISHED = ("done", "failed", "cancelled")
CANCEL_GRACE_SECONDS = 4.0  # SIGTERM, then SIGKILL after this: a cancelled job's process is gone within 5 s
STATUS_INTERVAL = 0.5  # seconds between two status writes of the same stage (a stage change is written at once)
SLOTS = 1  # jobs that train at once: on 2 cores one job with one thread less than the machine leaves the pages a core


def default_threads() -> int:
    """One thread less than the machine has, at least one: the app's pages keep a core while a job trains."""
    return max(1, (os.cpu_count() or 1) - 1)


@dataclass(frozen=True)
class JobSpec:
    """What a job runs. `commands`: argument lists of `python -m core`; `run_dir`: the run folder it writes into (the
    pages find a run's jobs by it); threads and executor flags are part of the commands, not of the identity."""

    title: str
    kind: str  # run, sweep, point, detectors, robustness, abstain, tune: what the job list and the pages filter by
    commands: tuple[tuple[str, ...], ...]
    run_dir: str | None = None
    threads: int = field(default_factory=default_threads)

    def __post_init__(self):
        if not self.commands or not all(self.commands):
            raise ValueError("a job runs at least one non-empty command")
        if self.threads < 1:
            raise ValueError(f"a job needs at least one thread, got {self.threads}")

    @property
    def id(self) -> str:
        """The same work, the same id (whoever asks, with however many threads)."""
        text = json.dumps([self.kind, [list(command) for command in self.commands]])
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    @classmethod
    def from_dict(cls, data: dict) -> "JobSpec":
        return cls(
            data["title"],
            data["kind"],
            tuple(tuple(command) for command in data["commands"]),
            data.get("run_dir"),
            int(data.get("threads", default_threads())),
        )


@dataclass
class JobStatus:
    """A job as the job list shows it (plain data)."""

    id: str
    title: str
    kind: str
    run_dir: str | None
    state: str  # queued, running, done, failed, cancelled
    command: int = 0  # the command running (1-based), or the last one run
    commands: int = 1
    stage: str = ""
    done: int = 0
    total: int = 0
    stage_started: float | None = None
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    threads: int = 1
    log_tail: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left in the current stage at its rate so far (None before two progress reports)."""
        if self.state != "running" or not self.stage_started or self.done <= 0 or self.total <= self.done:
            return None
        spent = time.time() - self.stage_started
        return spent / self.done * (self.total - self.done)

    def describe(self) -> str:
        """One line: state, command n of N, stage, done / total, time left."""
        parts = [self.state]
        if self.commands > 1 and self.command:
            parts.append(f"step {self.command} of {self.commands}")
        if self.active and self.stage:
            parts.append(f"{self.stage}: {self.done:,}/{self.total:,}" if self.total else self.stage)
        if (eta := self.eta_seconds) is not None:
            parts.append(f"about {minutes(eta)} left in this stage")
        if self.state in FINISHED and self.started and self.finished:
            parts.append(f"after {minutes(self.finished - self.started)}")
        return " · ".join(parts)


def minutes(seconds: float) -> str:
    """'45 s', '3 min', '1 h 05 min': how a person reads a duration."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


# ---- the app's side: submit, read, cancel ----


def submit(root: str | Path, spec: JobSpec, again: bool = False) -> JobStatus:
    """Start the job, or return it when the same job is queued, running or done; a failed or cancelled one is
    started again (it resumes: its commands keep their finished work); a done one too with `again` (work that adds,
    such as Optuna trials)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / spec.id
    with _locked(root / "submit.lock"):
        if (folder / JOB_FILE).exists():
            current = read_status(folder)
            if current.active or (current.state == "done" and not again):
                return current
        folder.mkdir(exist_ok=True)
        (folder / CANCEL_FILE).unlink(missing_ok=True)
        write_json(folder / JOB_FILE, {**asdict(spec), "id": spec.id})
        write_json(folder / STATUS_FILE, {"state": "queued", "submitted": time.time(), "commands": len(spec.commands)})
        lock = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: read_status said it is not running
            with open(folder / LOG_FILE, "ab") as log:
                # the lock's descriptor goes to the child, which holds it as long as it lives (flock is per open file)
                process = subprocess.Popen(
                    [sys.executable, "-m", "core.jobs", str(folder), "--lock-fd", str(lock)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(lock,),
                    start_new_session=True,  # its own process group: the server's end is not its end
                    cwd=PROJECT_ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            # reaps the process when it ends (no zombie per job in a long-lived server); it only waits
            threading.Thread(target=process.wait, name=f"reap-{spec.id}", daemon=True).start()
        finally:
            os.close(lock)
    return read_status(folder)


def read_status(folder: str | Path, log_lines: int = 8) -> JobStatus:
    """The job in `folder` as it stands: a job whose process is gone without finishing is failed (killed)."""
    folder = Path(folder)
    spec = JobSpec.from_dict(_read_json(folder / JOB_FILE) or {"title": "?", "kind": "?", "commands": [["?"]]})
    status = _read_json(folder / STATUS_FILE) or {}
    known = {name for name in JobStatus.__dataclass_fields__}
    job = JobStatus(
        id=folder.name,
        title=spec.title,
        kind=spec.kind,
        run_dir=spec.run_dir,
        threads=spec.threads,
        **{key: value for key, value in status.items() if key in known - {"id", "title", "kind", "run_dir"}},
    )
    job.state = status.get("state", "queued")
    job.log_tail = _tail(folder / LOG_FILE, log_lines)
    if job.state not in FINISHED and not _held(folder / LOCK_FILE):
        if (folder / CANCEL_FILE).exists():
            job.state = "cancelled"
        else:
            job.state = "failed"
            job.error = job.error or "the job's process ended before it finished (killed, or the machine restarted)"
    return job


def list_jobs(root: str | Path, run_dir: str | None = None, kind: str | None = None) -> list[JobStatus]:
    """Every job under root, newest first; only a run's, or a kind's, when asked."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [read_status(folder) for folder in root.iterdir() if (folder / JOB_FILE).exists()]
    found = [job for job in found if (run_dir is None or job.run_dir == str(run_dir)) and kind in (None, job.kind)]
    return sorted(found, key=lambda job: job.submitted or 0, reverse=True)


def cancel(root: str | Path, job_id: str, grace: float = CANCEL_GRACE_SECONDS) -> JobStatus:
    """Ask the job to stop and end its process group (SIGTERM, then SIGKILL after `grace` s): what it finished stays
    (the model cache, the points written so far)."""
    folder = Path(root) / job_id
    if not (folder / JOB_FILE).exists():
        raise ValueError(f"there is no job {job_id!r}")
    (folder / CANCEL_FILE).touch()
    pid = (_read_json(folder / STATUS_FILE) or {}).get("pid")
    if pid and _held(folder / LOCK_FILE):
        _signal_group(pid, signal.SIGTERM)
        deadline = time.time() + grace
        while _held(folder / LOCK_FILE) and time.time() < deadline:
            time.sleep(0.05)
        if _held(folder / LOCK_FILE):
            _signal_group(pid, signal.SIGKILL)
            while _held(folder / LOCK_FILE) and time.time() < deadline + 1:
                time.sleep(0.05)
    return read_status(folder)


def forget(root: str | Path, job_id: str) -> None:
    """Remove a finished job from the list (its results stay where its commands wrote them)."""
    folder = Path(root) / job_id
    if read_status(folder).active:
        raise ValueError("cancel the job before removing it from the list")
    for name in (JOB_FILE, STATUS_FILE, LOG_FILE, LOCK_FILE, CANCEL_FILE):
        (folder / name).unlink(missing_ok=True)
    folder.rmdir()


# ---- the job's side: `python -m core.jobs <folder> --lock-fd N` ----


class StatusWriter:
    """The job process's status.json: a Stages listener (core.studies) that writes stage, done and total, at most every
    STATUS_INTERVAL seconds within a stage."""

    def __init__(self, folder: Path, spec: JobSpec):
        self.folder, self.spec = folder, spec
        self.data = {
            "state": "queued",
            "pid": os.getpid(),
            "commands": len(spec.commands),
            **{k: v for k, v in (_read_json(folder / STATUS_FILE) or {}).items() if k == "submitted"},
        }
        self.last_write = 0.0

    def update(self, **changes) -> None:
        self.data.update(changes)
        write_json(self.folder / STATUS_FILE, self.data)
        self.last_write = time.time()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.data.get("stage"):
            self.update(stage=stage, done=done, total=total, stage_started=time.time())
        elif time.time() - self.last_write >= STATUS_INTERVAL or done >= total:
            self.update(done=done, total=total)


def run_job(folder: Path) -> int:
    """Run a job's commands in order in this process (the caller holds the job's lock)."""
    spec = JobSpec.from_dict(_read_json(folder / JOB_FILE))
    status = StatusWriter(folder, spec)
    status.update(state="queued")
    torch.set_num_threads(spec.threads)
    with _slot(folder.parent):
        if (folder / CANCEL_FILE).exists():
            status.update(state="cancelled", finished=time.time())
            return 130
        status.update(state="running", started=time.time())
        Stages.listeners.append(status)
        for number, command in enumerate(spec.commands, 1):
            status.update(command=number, stage="starting", done=0, total=0, stage_started=time.time())
            print(f"$ python -m core {' '.join(command)}", flush=True)
            try:
                code = cli.main(list(command))
            except SystemExit as exit_:  # argparse's --help and its errors
                code = exit_.code if isinstance(exit_.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
            if code != 0:
                errors = [line for line in _tail(folder / LOG_FILE, 40) if line.startswith("error:")]
                error = errors[-1] if errors else f"command {number} ended with exit code {code}"
                status.update(state="failed", error=error, finished=time.time())
                return code
        status.update(state="done", finished=time.time(), stage="", error=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[1] != "--lock-fd":
        print("error: usage: python -m core.jobs <job folder> --lock-fd N (the app starts jobs: core.jobs.submit)")
        return 2
    folder, lock = Path(args[0]), int(args[2])
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # inherited from submit(): already ours
    except OSError:
        print("error: another process runs this job", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _cancelled)  # finally-blocks run: atomic writes clean up, the slot is released
    try:
        return run_job(folder)
    except JobCancelled:
        return 143


class JobCancelled(BaseException):
    """Raised in the job process by SIGTERM (core.jobs.cancel): not an Exception, so no command catches it."""


def _cancelled(*_) -> None:
    raise JobCancelled


# ---- locks and files ----


class _locked:
    """An exclusive flock on a file for the length of a with-block (blocking)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


class _slot(_locked):
    """One of the SLOTS job slots under root: the first free one, else wait for slot 0 (queued until then)."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self):
        for index in range(SLOTS):
            fd = os.open(self.root / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return self
            except OSError:
                os.close(fd)
        self.path = self.root / "slot-0.lock"
        return super().__enter__()


def _held(path: Path) -> bool:
    """Whether some process holds the flock on path."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing our descriptor releases the lock we may just have taken
    return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int) -> list[str]:
    """The last lines of a log; tqdm's carriage-return redraws collapse to their last state."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16_384))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    rows = [row.rsplit("\r", 1)[-1].rstrip() for row in text.replace("\r\n", "\n").split("\n")]
    return [row for row in rows if row][-lines:]


if __name__ == "__main__":
    sys.exit(main())
