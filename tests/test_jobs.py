"""engine.jobs: a training run as a child process; start, progress, stop, resume, reattach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.checkpoint import list_checkpoints
from engine.jobs import Job, JobError, JobManager

from test_train import corpus

ROOT = Path(__file__).resolve().parent.parent


def options(tmp_path, **overrides) -> dict:
    data = tmp_path / "corpus.txt"
    if not data.exists():
        corpus(data)
    opts = dict(data=str(data), out="demo", n_layer=2, n_head=2, n_embd=32, block_size=32,
                tokenizer="bpe", vocab_size=300, batch_size=4, max_steps=400, warmup_steps=2,
                lr=3e-3, eval_every=100, eval_batches=1, save_every=100, log_every=1,
                sample_tokens=4, cache_dir=str(tmp_path / "cache"), device="cpu")
    opts.update(overrides)
    return opts


def wait_until(predicate, timeout=120.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_start_progress_stop_resume(tmp_path):
    jobs = JobManager(tmp_path / "runs")
    assert jobs.current() is None and jobs.stop() is None
    job = jobs.start(options(tmp_path))
    try:
        assert job.run_dir == tmp_path / "runs" / "demo"
        assert job.status()["state"] in ("starting", "running")
        with pytest.raises(JobError, match="already running"):
            jobs.start(options(tmp_path, out="other"))
        wait_until(lambda: (job.status()["step"] or 0) >= 3, what="step 3")
        status = job.status()
        assert status["state"] == "running" and status["max_steps"] == 400
        assert status["loss"] > 0 and status["tokens_per_s"] > 0 and status["eta_s"] > 0
        events, offset = job.events(0)
        assert events[0]["type"] == "start" and offset > 0
        more = wait_until(lambda: job.events(offset)[0], what="new events")
        assert all(e["type"] in ("train", "eval", "sample", "checkpoint") for e in more)

        stopped = jobs.stop(wait=60)
        assert stopped["state"] == "stopped" and stopped["eta_s"] is None
        step = stopped["step"]
        assert list_checkpoints(job.run_dir)[-1][0] == step  # saved before exiting
        assert not (job.run_dir / "stop").exists()
    finally:
        job.kill()

    # resume with a new target; the job picks up where it stopped and finishes
    job = jobs.resume("demo", max_steps=step + 3)
    try:
        final = job.wait(120)
        assert final["state"] == "finished", job.log_tail()
        assert final["step"] == step + 3
        starts = [e for e in job.metrics() if e["type"] == "start"]
        assert starts[-1]["resumed_from"].endswith(f"step-{step}")
        assert jobs.current().run_dir == job.run_dir and not jobs.current().running()
        assert json.loads((job.run_dir / "job.json").read_text())["returncode"] == 0
    finally:
        job.kill()


@pytest.mark.parametrize("change, message", [
    ({"lr": -1.0}, "lr must be a number"),
    ({"batch_size": 0}, "batch-size must be an integer >= 1"),
    ({"data": "/no/such/corpus.txt"}, "no such file or directory"),
    ({"out": ""}, "no run name given"),
    ({"init_from": "./no-such-model"}, "no such model"),
])
def test_bad_options_fail_before_spawning(tmp_path, change, message):
    jobs = JobManager(tmp_path / "runs")
    with pytest.raises(ValueError, match=message):
        jobs.start(options(tmp_path, **change))
    assert jobs.current() is None
    assert not (tmp_path / "runs" / "demo" / "job.json").exists()


def test_existing_run_needs_resume_or_force(tmp_path):
    jobs = JobManager(tmp_path / "runs")
    run = tmp_path / "runs" / "demo"
    (run / "checkpoints" / "step-100").mkdir(parents=True)
    (run / "train_config.json").write_text("{}")
    (run / "checkpoints" / "step-100" / "config.json").write_text('{"format": "gpt-workbench"}')
    with pytest.raises(ValueError, match="already holds a training run, last checkpoint at step 100"):
        jobs.start(options(tmp_path))
    (tmp_path / "runs" / "mine").mkdir()
    (tmp_path / "runs" / "mine" / "thesis.tex").write_text("do not delete")
    with pytest.raises(ValueError, match="not a training run"):
        jobs.start(options(tmp_path, out="mine"), force=True)
    assert (tmp_path / "runs" / "mine" / "thesis.tex").read_text() == "do not delete"
    with pytest.raises(ValueError, match="unknown training preset"):
        jobs.start(options(tmp_path, out="new"), preset="huge-gpu")


def test_failed_child_reports_its_error(tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'loading...'\necho 'error: data/x.txt: not valid UTF-8' >&2\nexit 2\n")
    fake.chmod(0o755)
    jobs = JobManager(tmp_path / "runs", python=str(fake))
    job = jobs.start(options(tmp_path))
    status = wait_until(lambda: (s := job.status())["state"] == "failed" and s, timeout=30,
                        what="failure")
    assert status["error"] == "data/x.txt: not valid UTF-8"
    # a failed job does not block the next one
    assert jobs.running() is None


@pytest.mark.slow
def test_reattach_after_the_ui_process_is_gone(tmp_path):
    # A "UI" process starts the job and exits; a new manager (a restarted UI) finds it running.
    script = textwrap.dedent(f"""
        import json, sys
        from engine.jobs import JobManager
        job = JobManager({str(tmp_path / 'runs')!r}).start(json.loads(sys.argv[1]))
        print(job.pid)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(options(tmp_path))], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.strip())
    jobs = JobManager(tmp_path / "runs")
    job = jobs.current()
    try:
        assert job is not None and job.pid == pid and job.running()
        wait_until(lambda: (job.status()["step"] or 0) >= 1, what="first step")
        assert jobs.running().run_dir == job.run_dir
        assert jobs.stop(wait=60)["state"] == "stopped"
        assert not Job(job.run_dir).running()
    finally:
        job.kill()


@pytest.mark.parametrize("name", ["current-job.json", ".jobs.lock", "uploads"])
def test_run_names_of_the_runners_own_files_are_refused(tmp_path, name):
    jobs = JobManager(tmp_path / "runs")
    with pytest.raises(JobError, match=f"run name '{name}' is reserved"):
        jobs.start(options(tmp_path, out=name), preset="cpu-demo")
    with pytest.raises(JobError, match="is reserved"):
        jobs.start(options(tmp_path, out=str(tmp_path / "runs" / name)), preset="cpu-demo")
    assert not (tmp_path / "runs" / name).is_dir() and jobs.current() is None


def test_a_job_that_cannot_be_recorded_is_ended(tmp_path, monkeypatch):
    """If writing the job's files fails after the child was spawned, the child is killed: an
    untracked job would run on while another one could be started."""
    import engine.jobs as jobs_module

    real = jobs_module.atomic_write_json

    def failing(path, data):
        if Path(path).name == "current-job.json":
            raise OSError("disk full")
        return real(path, data)

    monkeypatch.setattr(jobs_module, "atomic_write_json", failing)
    jobs = JobManager(tmp_path / "runs")
    with pytest.raises(OSError, match="disk full"):
        jobs.start(options(tmp_path), preset="cpu-demo")
    pid = json.loads((tmp_path / "runs" / "demo" / "job.json").read_text())["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
