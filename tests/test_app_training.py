"""app.training (with app.training_data and app.progress): training jobs for a UI. Every check
runs before any process starts; the status a UI polls reads only what is new."""

from __future__ import annotations

import pytest

from app.progress import MAX_CURVE_POINTS, thin
from app.training_data import data_source
from gradio_support import make_workbench


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return make_workbench(tmp_path_factory.mktemp("training"))


def test_training_choices(wb):
    labels = [label for label, _ in wb.training.presets()]
    assert any(label.startswith("cpu-demo: ") for label in labels)
    data = wb.training.corpora()
    assert data and data[0][0].startswith("stories/tiny.txt (text")
    assert wb.training.status() == {"state": "idle", "run": None, "curve": [], "samples": []}
    assert wb.training.resumable_runs() == []
    assert wb.training.device_notice()


@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="huge"), "unknown training preset 'huge'"),
    (dict(preset="cpu-demo"), "choose one data source"),
    (dict(preset="cpu-demo", data="x", hf_name="y"), "choose one data source"),
    (dict(preset="cpu-demo", data="/etc/passwd"), "unknown bundled corpus"),
    (dict(preset="cpu-demo", hf_name="hf:/etc"), "is not a Hugging Face dataset name"),
    (dict(preset="cpu-demo", hf_name="../secrets"), "is not a Hugging Face dataset name"),
    (dict(preset="cpu-demo", hf_name="data"), "is not a Hugging Face dataset name"),
    (dict(preset="cpu-demo", hf_name="ok", run_name="../escape"), "run name '../escape'"),
    (dict(preset="cpu-demo", hf_name="ok", run_name="current-job.json"), "is reserved"),
    (dict(preset="cpu-demo", hf_name="ok", run_name="uploads"), "is reserved"),
    (dict(preset="cpu-demo", hf_name="ok", max_steps=0), "max_steps must be between 1"),
    (dict(preset="cpu-demo", hf_name="ok", lr="fast"), "lr must be a number"),
    (dict(preset="cpu-demo", hf_name="ok", optimizer="sgd"), "unknown training option"),
    (dict(preset="cpu-demo", upload="/nonexistent/file.txt", upload_root="/nonexistent"),
     "upload it again"),
    (dict(preset="cpu-demo", hf_name="ok", lora_rank=4), "lora-rank needs --init-from"),
    (dict(preset="cpu-demo", hf_name="ok", lora_rank=-1), "lora_rank must be between 0"),
])
def test_start_training_rejects_bad_input(wb, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        wb.training.start(**kwargs)
    assert wb.training.status()["state"] == "idle"


def test_upload_checks(wb, tmp_path):
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF")
    with pytest.raises(ValueError, match="upload a text file"):
        wb.training.start("cpu-demo", upload=str(pdf), upload_root=tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        wb.training.start("cpu-demo", upload=str(empty), upload_root=tmp_path)
    good = tmp_path / "my data!.txt"
    good.write_text("hello world\n" * 10)
    stored = data_source(None, str(good), None, [], wb.training.runs_dir / "uploads",
                         upload_root=tmp_path)
    assert stored.startswith(str(wb.training.runs_dir / "uploads" / "my_data_-"))
    assert open(stored).read() == good.read_text()


def test_upload_only_from_the_upload_folder(wb, tmp_path):
    """A client cannot make the server copy (and train on) a file it names by path: uploads are
    taken only from the folder the trusted front end says its upload widget writes to."""
    secret = tmp_path / "secret" / "notes.md"
    secret.parent.mkdir()
    secret.write_text("private\n" * 10)
    uploads = tmp_path / "uploads-widget"
    uploads.mkdir()
    (uploads / "escape.md").symlink_to(secret)
    for kwargs in (dict(upload=str(secret)), dict(upload=str(secret), upload_root=uploads),
                   dict(upload=str(uploads / ".." / "secret" / "notes.md"), upload_root=uploads),
                   dict(upload=str(uploads / "escape.md"), upload_root=uploads)):
        with pytest.raises(ValueError, match="upload box"):
            wb.training.start("cpu-demo", **kwargs)
    assert not list((wb.training.runs_dir / "uploads").glob("notes-*"))
    for bad in (dict(preset=["cpu-demo"], hf_name="x"), dict(preset="cpu-demo", data={"a": 1})):
        with pytest.raises(ValueError):
            wb.training.start(**bad)


def test_training_status_thins_the_curve_and_reads_only_new_events(tmp_path, monkeypatch):
    import json

    from engine.fileio import atomic_write_json, atomic_write_text

    w = make_workbench(tmp_path)
    run = w.training.runs_dir / "long"
    run.mkdir(parents=True)
    atomic_write_json(run / "job.json", {"state": "finished", "pid": None, "max_steps": 5000})
    atomic_write_json(w.training.runs_dir / "current-job.json", {"run_dir": str(run)})
    lines = [{"type": "start", "step": 0, "max_steps": 5000}]
    for step in range(1, 5001):
        lines.append({"type": "train", "step": step, "loss": 10 - step / 1000, "time": step})
        if step % 1000 == 0:
            lines.append({"type": "eval", "step": step, "val_loss": 9 - step / 1000})
            lines.append({"type": "sample", "step": step, "prompt": "A", "text": f"s{step}"})
    write = lambda events: "".join(json.dumps(e) + "\n" for e in events)
    (run / "metrics.jsonl").write_text(write(lines))
    st = w.training.status()
    train = [p for p in st["curve"] if p["split"] == "train"]
    val = [p for p in st["curve"] if p["split"] == "validation"]
    assert len(train) == MAX_CURVE_POINTS and len(st["curve"]) <= MAX_CURVE_POINTS + 5
    assert train[0]["step"] == 1 and train[-1]["step"] == 5000
    assert [p["step"] for p in val] == [1000, 2000, 3000, 4000, 5000]
    assert [x["text"] for x in st["samples"]] == ["s1000", "s2000", "s3000", "s4000", "s5000"]
    # The next poll reads only what was appended since.
    from engine.jobs import Job

    full = Job(run).status()  # what reading every event gives
    assert {k: st[k] for k in full} == full and st["step"] == 5000 and st["val_loss"] == 4.0
    offsets, real = [], Job.events
    monkeypatch.setattr(Job, "events", lambda job, since=0: offsets.append(since) or real(job, since))
    monkeypatch.setattr(Job, "metrics", lambda job: pytest.fail("read all of metrics.jsonl"))
    size = (run / "metrics.jsonl").stat().st_size
    with open(run / "metrics.jsonl", "a") as f:
        f.write(write([{"type": "eval", "step": 5001, "val_loss": 1.5}]))
    st = w.training.status()
    assert st["curve"][-1] == {"step": 5001, "loss": 1.5, "split": "validation"}
    assert offsets == [size] and st["val_loss"] == 1.5
    monkeypatch.undo()
    # A resume rewrites the file: it is read again from the start.
    atomic_write_text(run / "metrics.jsonl", write(lines[:11]))
    st = w.training.status()
    assert [p["step"] for p in st["curve"]] == list(range(1, 11)) and st["samples"] == []
    with open(run / "metrics.jsonl", "a") as f:  # a resumed run: figures since its start
        f.write(write([{"type": "start", "step": 10, "max_steps": 20},
                       {"type": "train", "step": 11, "loss": 2.0, "time": 11}]))
    st = w.training.status()
    full = Job(run).status()
    assert {k: st[k] for k in full} == full and (st["step"], st["max_steps"]) == (11, 20)


def test_thin_keeps_first_and_last():
    assert thin(list(range(10)), 20) == list(range(10))
    assert thin(list(range(1001)), 5) == [0, 250, 500, 750, 1000]


def test_a_lora_run_from_the_training_desk(wb):
    """The UIs' LoRA option: the run fine-tunes adapters of the chosen model and its checkpoints
    hold only them."""
    import time

    from engine.checkpoint import list_checkpoints

    story = wb.models.default("story")
    st = wb.training.start("cpu-demo", data=wb.training.corpora()[0][1], run_name="lora-ui",
                           init_from=story, lora_rank=2, max_steps=2, batch_size=2,
                           block_size=16, eval_every=2, save_every=2)
    deadline = time.time() + 180
    while (st := wb.training.status())["state"] not in ("finished", "failed"):
        assert time.time() < deadline, st
        time.sleep(0.5)
    assert st["state"] == "finished", st
    step = list_checkpoints(wb.training.runs_dir / "lora-ui")[-1][1]
    assert (step / "adapter.json").is_file() and not (step / "model.safetensors").exists()
    assert wb.models.load(str(wb.training.runs_dir / "lora-ui")).model.config.n_embd == 32
