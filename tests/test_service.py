"""engine.service: input limits, sampling values from UIs, model choices, the explorer data,
chat and story through engine.assistant, the training policy and training input checks."""

from __future__ import annotations

import math

import pytest

from engine import service as S
from gradio_support import make_workbench


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return make_workbench(tmp_path_factory.mktemp("svc"))


# -- text and numbers --------------------------------------------------------------------------

def test_clean_text_strips_controls_keeps_unicode():
    text = "a\x00b\x1b[31m\u200fשלום 🙂‍🔥\r\nnext\rline\ttab"
    assert S.clean_text(text) == "ab[31m\u200fשלום 🙂‍🔥\nnext\nline\ttab"
    assert S.clean_text("x\ud800y") == "xy"  # a lone surrogate cannot be encoded


@pytest.mark.parametrize("bad, words", [
    ("x" * 100_000, ["100,000 characters", "8,000"]),
    ("", ["empty"]),
    ("  \n\t ", ["empty"]),
    ("\x00\x01", ["empty"]),
    (42, ["must be text", "int"]),
])
def test_clean_text_rejects_with_a_message(bad, words):
    with pytest.raises(ValueError) as e:
        S.clean_text(bad, "prompt")
    for w in words:
        assert w in str(e.value)


def test_sampling_params_from_ui_values():
    p = S.sampling_params(temperature=0.5, top_k=40.0, top_p="0.9", repetition_penalty=1.2,
                          max_new_tokens=12.0, seed=7.0)
    assert (p.temperature, p.top_k, p.top_p, p.repetition_penalty, p.max_new_tokens, p.seed) == \
        (0.5, 40, 0.9, 1.2, 12, 7)
    assert isinstance(p.top_k, int) and isinstance(p.seed, int)
    d = S.sampling_params()
    assert d.temperature == S.SAMPLING_DEFAULTS["temperature"] and d.seed is None
    for empty in (None, "", -1):
        assert S.sampling_params(seed=empty).seed is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_p=1.5), "top_p must be between 0.05 and 1, got 1.5"),
    (dict(temperature=-1), "temperature must be between 0 and 2, got -1.0"),
    (dict(top_k=2.5), "top_k must be a whole number, got 2.5"),
    (dict(max_new_tokens=100_000), "max_new_tokens must be between 1 and 1024"),
    (dict(temperature="hot"), "temperature must be a number, got 'hot'"),
    (dict(temperature=math.nan), "temperature must be a finite number"),
    (dict(repetition_penalty=True), "repetition_penalty must be a number"),
    (dict(seed=-5), "seed must be between 0 and 2147483647"),
    (dict(seed=1.5), "seed must be a whole number"),
])
def test_sampling_params_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        S.sampling_params(**kwargs)


def test_limits_match_the_engine():
    """Every value the sliders allow is one SamplingParams accepts."""
    lo = {n: S.LIMITS[n][0] for n in S.LIMITS if n != "seed"}
    hi = {n: S.LIMITS[n][1] for n in S.LIMITS if n != "seed"}
    S.sampling_params(**lo)
    S.sampling_params(**hi)


# -- policy ------------------------------------------------------------------------------------

@pytest.mark.parametrize("host, share, exposed", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False),
    ("[::1]", False, False), (None, False, False), ("0.0.0.0", False, True),
    ("192.168.1.5", False, True), ("myhost.example", False, True), ("127.0.0.1", True, True),
])
def test_is_exposed(host, share, exposed):
    assert S.is_exposed(host, share) is exposed


def test_training_policy():
    assert S.training_policy(False, {}).allowed
    space = S.training_policy(False, {"SPACE_ID": "me/app"})
    assert not space.allowed and "Space" in space.reason and S.ALLOW_TRAINING_ENV in space.reason
    public = S.training_policy(True, {})
    assert not public.allowed and S.ALLOW_TRAINING_ENV in public.reason
    for yes in ("1", "true", "YES"):
        assert S.training_policy(True, {"SPACE_ID": "x", S.ALLOW_TRAINING_ENV: yes}).allowed
    assert not S.training_policy(True, {S.ALLOW_TRAINING_ENV: "0"}).allowed


# -- models ------------------------------------------------------------------------------------

def test_model_choices_and_defaults(wb):
    choices = wb.model_choices()
    labels = [label for label, _ in choices]
    assert labels[:2] == ["python (bundled)", "story (bundled)"]
    assert "gpt2 (hub)" in labels
    assert wb.default_model("python").endswith("python")
    assert wb.default_model("story").endswith("story")
    # Tabs switch between the bundled models, but leave another choice alone.
    assert wb.suggest_model("story", wb.default_model("python")) == wb.default_model("story")
    assert wb.suggest_model("story", "gpt2") == "gpt2"


def test_only_listed_models_load(wb, tmp_path):
    assert wb.resolve("story (bundled)") == wb.default_model("story")
    for bad in ("/etc", str(tmp_path), "../checkpoints/story", "someone/model"):
        with pytest.raises(ValueError, match="unknown model"):
            wb.resolve(bad)
    with pytest.raises(ValueError, match="no model chosen"):
        wb.resolve("")


def test_hub_model_offline_gives_a_clear_message(wb):
    with pytest.raises(S.ModelLoadError) as e:
        wb.load("gpt2")
    assert "gpt2" in str(e.value)


def test_describe(wb):
    line = wb.describe(wb.default_model("story"))
    assert "2 layers × 32 dims" in line and "64-token context" in line and "gpt2" in line
    assert wb.model_card(wb.default_model("story")) == "tiny story test model"


# -- generation and the explorer ---------------------------------------------------------------

def test_story_streams(wb):
    params = S.sampling_params(max_new_tokens=12, seed=1)
    reply = wb.story("Once upon a time", wb.default_model("story"), params)
    deltas = list(reply)
    assert len(deltas) > 1 and "".join(deltas)
    assert reply.stats.new_tokens == 12 and reply.stats.tokens_per_s > 0
    again = wb.story("Once upon a time", wb.default_model("story"), params).text()
    assert again == "".join(deltas)  # same seed, same story


def test_chat_python_mode_refuses_off_topic(wb):
    params = S.sampling_params(max_new_tokens=8)
    reply = wb.chat("What is the best pizza in Rome?", [], "python", wb.default_model(), params)
    assert reply.refused and reply.refusal and reply.reason
    answer = wb.chat("How do I reverse a list in Python?", [], "python", wb.default_model(),
                     params)
    assert not answer.refused
    assert answer.text() is not None and answer.stats.new_tokens <= 8


def test_chat_free_mode_and_history(wb):
    params = S.sampling_params(max_new_tokens=6, seed=3)
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": "hello", "metadata": None},
               {"role": "assistant", "content": "a note", "metadata": {"title": "Why I declined"}},
               {"role": "user", "content": [{"type": "text", "text": "parts"}]},
               {"role": "assistant", "content": "ok"}]
    assert S.clean_history(history) == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "parts"}, {"role": "assistant", "content": "ok"}]
    reply = wb.chat("Tell me more", history, "chat", wb.default_model(), params)
    assert not reply.refused and "Tell me more" in reply.prompt and "a note" not in reply.prompt
    reply.text()


@pytest.mark.parametrize("history, message", [
    ("not a list", "must be a list"),
    ([{"role": "system", "content": "x"}], "role 'user' or 'assistant'"),
    ([{"role": "user", "content": 5}], "no text content"),
])
def test_chat_rejects_bad_history(wb, history, message):
    with pytest.raises(ValueError, match=message):
        wb.chat("hi", history, "chat", wb.default_model(), S.sampling_params())


def test_chat_rejects_unknown_mode(wb):
    with pytest.raises(ValueError, match="unknown chat mode 'story'"):
        wb.chat("hi", [], "story", wb.default_model(), S.sampling_params())


def test_explain_next(wb):
    spec = wb.default_model("story")
    params = S.sampling_params(temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.3)
    r = wb.explain_next("the cat and the cat", spec, params, top=8)
    names = [s["name"] for s in r["stages"]]
    assert names == ["raw", "repetition penalty", "temperature", "top-k", "top-p"]
    assert len(r["tokens"]) == len(r["token_ids"]) >= 8
    assert all(len(s["probs"]) == len(r["tokens"]) for s in r["stages"])
    final = r["stages"][-1]["probs"]
    assert 1 <= sum(p > 0 for p in final) <= 5  # top-k 5 leaves at most 5 candidates
    assert r["context_tokens"] == 5 and r["truncated"] is False
    greedy = wb.explain_next("the cat", spec, S.sampling_params(temperature=0), top=3)
    assert greedy["stages"][-1]["name"] == "greedy"
    assert sorted(greedy["stages"][-1]["probs"])[-1] == 1.0
    long = wb.explain_next("word " * 500, spec, params, top=3)  # a 64-token window
    assert long["truncated"] and long["context_tokens"] == 64
    empty = wb.explain_next("", spec, params, top=3)  # the start of a document
    assert empty["context_tokens"] == 1
    with pytest.raises(ValueError, match="top must be a whole number between 1 and 30"):
        wb.explain_next("x", spec, params, top=0)


def test_token_label():
    from engine.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    assert S.token_label(tok, tok.encode(" the")[0]) == "␣the"
    assert S.token_label(tok, tok.encode("\n")[0]) == "↵"
    assert S.token_label(tok, tok.eot_id) == "<|endoftext|>"
    partial = tok.encode("世")[0]  # the first byte-level piece of a CJK character
    if len(tok.encode("世")) > 1:
        assert S.token_label(tok, partial).startswith("<0x")


# -- training input checks (all before any process starts) -------------------------------------

def test_training_choices(wb):
    labels = [label for label, _ in wb.training_presets()]
    assert any(label.startswith("cpu-demo: ") for label in labels)
    data = wb.training_data()
    assert data and data[0][0].startswith("stories/tiny.txt (text")
    assert wb.training_status() == {"state": "idle", "run": None, "curve": [], "samples": []}
    assert wb.resumable_runs() == []
    assert wb.device_notice()


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
])
def test_start_training_rejects_bad_input(wb, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        wb.start_training(**kwargs)
    assert wb.training_status()["state"] == "idle"


def test_upload_checks(wb, tmp_path):
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF")
    with pytest.raises(ValueError, match="upload a text file"):
        wb.start_training("cpu-demo", upload=str(pdf), upload_root=tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        wb.start_training("cpu-demo", upload=str(empty), upload_root=tmp_path)
    good = tmp_path / "my data!.txt"
    good.write_text("hello world\n" * 10)
    stored = wb._training_data(None, str(good), None, upload_root=tmp_path)
    assert stored.startswith(str(wb.runs_dir / "uploads" / "my_data_-"))
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
            wb.start_training("cpu-demo", **kwargs)
    assert not list((wb.runs_dir / "uploads").glob("notes-*"))
    for bad in (dict(preset=["cpu-demo"], hf_name="x"), dict(preset="cpu-demo", data={"a": 1})):
        with pytest.raises(ValueError):
            wb.start_training(**bad)


def test_training_status_thins_the_curve_and_reads_only_new_events(tmp_path, monkeypatch):
    import json

    from engine.fileio import atomic_write_json, atomic_write_text

    w = make_workbench(tmp_path)
    run = w.runs_dir / "long"
    run.mkdir(parents=True)
    atomic_write_json(run / "job.json", {"state": "finished", "pid": None, "max_steps": 5000})
    atomic_write_json(w.runs_dir / "current-job.json", {"run_dir": str(run)})
    lines = [{"type": "start", "step": 0, "max_steps": 5000}]
    for step in range(1, 5001):
        lines.append({"type": "train", "step": step, "loss": 10 - step / 1000, "time": step})
        if step % 1000 == 0:
            lines.append({"type": "eval", "step": step, "val_loss": 9 - step / 1000})
            lines.append({"type": "sample", "step": step, "prompt": "A", "text": f"s{step}"})
    write = lambda events: "".join(json.dumps(e) + "\n" for e in events)
    (run / "metrics.jsonl").write_text(write(lines))
    st = w.training_status()
    train = [p for p in st["curve"] if p["split"] == "train"]
    val = [p for p in st["curve"] if p["split"] == "validation"]
    assert len(train) == S.MAX_CURVE_POINTS and len(st["curve"]) <= S.MAX_CURVE_POINTS + 5
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
    st = w.training_status()
    assert st["curve"][-1] == {"step": 5001, "loss": 1.5, "split": "validation"}
    assert offsets == [size] and st["val_loss"] == 1.5
    monkeypatch.undo()
    # A resume rewrites the file: it is read again from the start.
    atomic_write_text(run / "metrics.jsonl", write(lines[:11]))
    st = w.training_status()
    assert [p["step"] for p in st["curve"]] == list(range(1, 11)) and st["samples"] == []
    with open(run / "metrics.jsonl", "a") as f:  # a resumed run: figures since its start
        f.write(write([{"type": "start", "step": 10, "max_steps": 20},
                       {"type": "train", "step": 11, "loss": 2.0, "time": 11}]))
    st = w.training_status()
    full = Job(run).status()
    assert {k: st[k] for k in full} == full and (st["step"], st["max_steps"]) == (11, 20)


def test_words_both_uis_show():
    assert [S.format_duration(x) for x in (None, 5, 61, 3725)] == [
        "–", "5 s", "1 min 01 s", "1 h 02 min"]
    st = {"state": "running", "step": 1200, "max_steps": 3000, "loss": 3.12345, "val_loss": 3.3,
          "tokens_per_s": 5400.4, "eta_s": 42.4}
    assert S.progress_parts(st) == ["Step 1,200/3,000", "loss 3.123", "validation loss 3.300",
                                    "5,400 tokens/s", "ETA 42 s"]
    assert S.progress_parts({"state": "finished", "elapsed_s": 125})[-1] == "took 2 min 05 s"
    assert S.notice_summary(["a", "b", "a", "a"]) == ["a (3 times)", "b"]
    assert S.SAMPLING_FIELDS == tuple(S.SAMPLING_LABELS) == tuple(S.LIMITS)


def test_thin_keeps_first_and_last():
    assert S.thin(list(range(10)), 20) == list(range(10))
    assert S.thin(list(range(1001)), 5) == [0, 250, 500, 750, 1000]


def test_training_refused_on_an_exposed_server(tmp_path, monkeypatch):
    monkeypatch.delenv(S.ALLOW_TRAINING_ENV, raising=False)
    public = make_workbench(tmp_path, exposed=True)
    for call in (lambda: public.start_training("cpu-demo", hf_name="x"),
                 lambda: public.stop_training(),
                 lambda: public.resume_training("run")):
        with pytest.raises(PermissionError, match=S.ALLOW_TRAINING_ENV):
            call()
    assert not (tmp_path / "runs").exists()


def test_large_hub_models_only_on_a_local_server_or_by_opt_in(tmp_path, monkeypatch):
    monkeypatch.delenv(S.ALLOW_LARGE_MODELS_ENV, raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    hub = lambda w: [spec for _label, spec in w.model_choices() if spec.startswith("gpt2")]
    local = make_workbench(tmp_path / "local")
    assert hub(local) == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    public = make_workbench(tmp_path / "public", exposed=True)
    assert hub(public) == ["gpt2", "gpt2-medium"]
    with pytest.raises(ValueError, match=f"gpt2-xl is not offered.*{S.ALLOW_LARGE_MODELS_ENV}=1"):
        public.load("gpt2-xl")
    monkeypatch.setenv("SPACE_ID", "someone/workbench")
    assert hub(local) == ["gpt2", "gpt2-medium"]
    monkeypatch.setenv(S.ALLOW_LARGE_MODELS_ENV, "1")
    assert hub(public) == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]


def test_process_wide_workbench(tmp_path):
    first = S.configure(runs_dir=tmp_path / "runs")
    assert S.get() is first and first.runs_dir == tmp_path / "runs"
