"""The Train tab: preset, data, key hyperparameters, start / stop / resume, and a live view of the
job (step, loss, tokens/s, ETA, loss curve for training and validation, sample generations).

The job is an engine.jobs child process (through app.training), so it outlives the page: a timer
polls its status, and after a reload the tab shows the running (or last) job again. A finished
run's checkpoints put it in the model picker straight away. On a server others can reach (a Space, --share, a public
host) the tab is read-only unless the owner allows training (app.policy.training_policy).
"""

from __future__ import annotations

from functools import partial

import gradio as gr
from gradio import utils as gradio_utils
import pandas as pd

from app.display import CURVE_COLORS, progress_parts
from app.markdown import plain
from app.limits import TRAINING
from app.training import ACTIVE
from app.training_data import UPLOAD_SUFFIXES
from app.workbench import Workbench

from .common import Controls, guard, show_text

SOURCES = ("Bundled corpus", "Upload a file", "Hugging Face dataset")
NEW_MODEL = "(a new model)"
# The hyperparameters the form shows (labels and minimums from app.limits.TRAINING).
FIELDS = {"max_steps": "train-max-steps", "lr": "train-lr", "batch_size": "train-batch",
          "block_size": "train-block", "lora_rank": "train-lora-rank"}
# The sidebar applies to every tab but this one: say so where it could mislead.
TRAIN_SETTINGS_NOTE = ("The sidebar's model and sampling settings are for chat and stories; a "
                       "training run uses the preset and the fields below (its sample "
                       "generations use fixed settings of their own).")
STATE_WORDS = {"stopping": "stopping (saving a checkpoint)"}  # other states read as they are


def status_markdown(st: dict) -> str:
    """The status line(s) of a job, as Markdown (every value from files is escaped)."""
    if st["state"] == "idle":
        return "No training job yet. Choose a preset and data, then press **Start training**."
    run = show_text(st.get("run") or "")
    state = STATE_WORDS.get(st["state"], show_text(str(st["state"])))
    text = " · ".join([f"**{run}**: {state}", *progress_parts(st)])
    if st["state"] == "failed":
        text += f"\n\n**Error:** {plain(st.get('error') or 'unknown')}"  # may quote a file
    if st["state"] in ("finished", "stopped"):
        text += "\n\nIts latest checkpoint is in the model picker as " \
                f"**{run} (run)**; pick it to chat or write with it."
    return text


def curve_frame(st: dict) -> pd.DataFrame | None:
    """The loss curve's points, with typed columns; None before there are any (Gradio 6.31's
    LinePlot draws no lines after an update if it ever held an empty frame).

    Every split in CURVE_COLORS is in the frame from the first point on: a split that has no
    point yet gets one with no loss (NaN, which the chart leaves out). Gradio 6.31's LinePlot
    takes its colour domain from the first frame it draws and keeps it through updates, so a
    validation line that appeared later was not drawn until the page was reloaded."""
    points = list(st.get("curve") or [])
    if not points:
        return None
    have = {p["split"] for p in points}
    points += [{"step": points[0]["step"], "loss": float("nan"), "split": split}
               for split in CURVE_COLORS if split not in have]
    return pd.DataFrame({"step": pd.Series([p["step"] for p in points], dtype="int64"),
                         "loss": pd.Series([p["loss"] for p in points], dtype="float64"),
                         "split": pd.Series([p["split"] for p in points], dtype="object")})


def samples_text(st: dict) -> str:
    lines = []
    for s in reversed(st.get("samples") or []):
        lines.append(f"— step {s['step']} —\n{s['prompt']}{s['text']}")
    return "\n\n".join(lines)


def poll(wb: Workbench, seen: dict, current_model):
    """Timer tick: status, curve, samples; the model list and resumable runs when they change.
    `seen` (per browser tab) remembers what was sent, to skip unchanged outputs."""
    st = wb.training.status()
    seen = dict(seen or {})
    key = (st.get("run"), st["state"], st.get("step"), len(st.get("curve") or []),
           len(st.get("samples") or []), st.get("eta_s"))
    changed = key != tuple(seen.get("key") or ())
    seen["key"] = list(key)
    choices = wb.models.choices()
    models = inits = gr.skip()
    if [list(c) for c in choices] != seen.get("choices"):
        seen["choices"] = [list(c) for c in choices]
        specs = [spec for _, spec in choices]
        models = gr.update(choices=choices,
                           value=current_model if current_model in specs else wb.models.default())
        inits = gr.update(choices=[NEW_MODEL, *choices])
    runs = wb.training.resumable_runs()
    resumable = gr.skip()
    if runs != seen.get("runs"):
        seen["runs"] = runs
        resumable = gr.update(choices=runs, value=runs[0] if runs else None)
    active = st["state"] in ACTIVE
    timer = gr.Timer(1.0 if active else 4.0)
    allowed = wb.training.policy().allowed
    buttons = (gr.update(interactive=allowed and not active),
               gr.update(interactive=allowed and active))
    if not changed:
        return (gr.skip(), gr.skip(), gr.skip(), models, inits, resumable, seen, timer, *buttons)
    return (status_markdown(st), curve_frame(st), samples_text(st), models, inits, resumable,
            seen, timer, *buttons)


def preset_label(presets: list[tuple[str, str]], preset) -> str:
    """The whole label of the chosen preset (its shape and recipe), as small print."""
    label = next((label for label, name in presets if name == preset), "")
    return f"<small>{show_text(label)}</small>" if label else ""


def preset_values(wb: Workbench, preset: str):
    """The preset's hyperparameters, to fill the number fields."""
    return wb.training.preset_values(preset, tuple(FIELDS))


def start(wb: Workbench, preset, source, corpus, upload, hf_name, run_name, init_from,
          *numbers):
    if source not in SOURCES:
        raise ValueError(f"data source must be one of: {', '.join(SOURCES)}; got {source!r}")
    data = corpus if source == SOURCES[0] else None
    upload = upload if source == SOURCES[1] else None
    hf_name = hf_name if source == SOURCES[2] else None
    if source == SOURCES[1] and not upload:
        raise ValueError("upload a .txt or .jsonl file first (or choose another data source)")
    if source == SOURCES[2] and not (hf_name or "").strip():
        raise ValueError("type a Hugging Face dataset name, e.g. roneneldan/TinyStories")
    init = None if init_from in (None, "", NEW_MODEL) else init_from
    options = dict(zip(FIELDS, numbers))
    # The gr.File value is a path in Gradio's upload folder (Gradio refuses any other path from a
    # client), so that folder is the one app.training may copy uploads from.
    st = wb.training.start(preset, data=data, upload=upload, hf_name=hf_name, run_name=run_name,
                           init_from=init, upload_root=gradio_utils.get_upload_folder(), **options)
    gr.Info(f"Started training run {st['run']}.")
    return status_markdown(st)


def stop(wb: Workbench):
    st = wb.training.stop()
    return status_markdown(st)


def resume(wb: Workbench, run_name, max_steps):
    st = wb.training.resume(run_name, max_steps=max_steps)
    gr.Info(f"Resumed training run {st['run']}.")
    return status_markdown(st)


def switch_source(source):
    return [gr.update(visible=source == s) for s in SOURCES]


def resume_box(runs: list[str], allowed: bool):
    """The "Resume a run" accordion: (run dropdown, step box, button)."""
    with gr.Accordion("Resume a run", open=False, elem_id="train-resume-box"):
        run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Run",
                          allow_custom_value=True, elem_id="train-resume-run",
                          interactive=allowed)
        with gr.Row():
            steps = gr.Number(None, label="Train until step (empty: as before)", precision=0,
                              elem_id="train-resume-steps", interactive=allowed)
            button = gr.Button("Resume", elem_id="train-resume", interactive=allowed)
    return run, steps, button


def job_view():
    """The job as it runs: (status line, loss curve, sample generations)."""
    status = gr.Markdown("", elem_id="train-status")
    curve = gr.LinePlot(None, x="step", y="loss", color="split", title="Loss", height=300,
                        elem_id="train-curve", x_axis_format="d", y_title="loss (cross-entropy)",
                        color_map=CURVE_COLORS)
    samples = gr.Textbox(label="Sample generations (newest first)", lines=8, max_lines=16,
                         interactive=False, elem_id="train-samples")
    return status, curve, samples


def number_box(name: str, value, allowed: bool) -> gr.Number:
    limit = TRAINING[name]
    return gr.Number(value, label=limit.label, precision=0 if limit.integer else None,
                     minimum=limit.lo, elem_id=FIELDS[name], interactive=allowed,
                     info=limit.help or None)


def build(demo: gr.Blocks, wb: Workbench, controls: Controls) -> None:
    policy = wb.training.policy()
    allowed = policy.allowed
    if not allowed:
        gr.Markdown(f"**Read-only.** {show_text(policy.reason)}",
                    elem_id="train-disabled")
    gr.Markdown(wb.training.device_notice(), elem_id="train-device")
    gr.Markdown(f"*{TRAIN_SETTINGS_NOTE}*", elem_id="train-settings-note")
    presets = wb.training.presets()
    default_preset = "cpu-demo" if any(p == "cpu-demo" for _, p in presets) else presets[0][1]
    corpora = wb.training.corpora()
    values = dict(zip(FIELDS, preset_values(wb, default_preset)))
    init_choices = [NEW_MODEL, *wb.models.choices()]
    with gr.Row(equal_height=False):
        # Left: what to train. Right: the job as it runs (visible without scrolling).
        with gr.Column(scale=5, min_width=380):
            preset = gr.Dropdown(presets, value=default_preset, label="Preset",
                                 info="A recipe: model shape, tokenizer and optimiser settings.",
                                 elem_id="train-preset", interactive=allowed)
            # The box cuts a long label short; the whole of it, under the box.
            preset_about = gr.Markdown(preset_label(presets, default_preset),
                                       elem_id="train-preset-about")
            source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Data",
                              elem_id="train-source", interactive=allowed)
            corpus = gr.Dropdown(corpora, value=corpora[0][1] if corpora else None,
                                 label="Bundled corpus", elem_id="train-corpus",
                                 interactive=allowed)
            upload = gr.File(label="Text (.txt, .md) or instruction pairs (.jsonl: instruction, "
                                   "input, output)", file_types=list(UPLOAD_SUFFIXES),
                             type="filepath", visible=False, elem_id="train-upload",
                             interactive=allowed)
            hf_name = gr.Textbox(label="Hugging Face dataset", visible=False,
                                 placeholder="roneneldan/TinyStories or wikitext:wikitext-2-raw-v1",
                                 info="Streamed from the hub: needs the network.",
                                 elem_id="train-hf", interactive=allowed)
            run_name = gr.Textbox(label="Run name", placeholder="empty: preset and time",
                                  info="A folder under runs/; the model picker shows it.",
                                  elem_id="train-name", interactive=allowed)
            with gr.Accordion("Hyperparameters", open=False, elem_id="train-hyper"):
                init_from = gr.Dropdown(init_choices, value=NEW_MODEL, label="Start from",
                                        allow_custom_value=True,
                                        info="A new model of the preset's shape, or fine-tune "
                                             "an existing one (for instruction data).",
                                        elem_id="train-init", interactive=allowed)
                numbers = []
                for row in (list(FIELDS)[:2], list(FIELDS)[2:4], list(FIELDS)[4:]):
                    with gr.Row():
                        numbers += [number_box(name, values[name], allowed) for name in row]
            with gr.Row():
                start_btn = gr.Button("Start training", variant="primary", elem_id="train-start",
                                      interactive=allowed)
                stop_btn = gr.Button("Stop (saves a checkpoint)", variant="stop",
                                     elem_id="train-stop", interactive=False)
            resume_run, resume_steps, resume_btn = resume_box(wb.training.resumable_runs(),
                                                              allowed)
        with gr.Column(scale=7, min_width=420):
            status, curve, samples = job_view()
    seen = gr.State({})
    timer = gr.Timer(1.0)

    source.change(switch_source, source, [corpus, upload, hf_name],
                  api_visibility="undocumented", queue=False)
    preset.change(guard(partial(preset_values, wb)), preset, numbers, api_visibility="undocumented",
                  queue=False)
    preset.change(partial(preset_label, presets), preset, preset_about,
                  api_visibility="undocumented", queue=False)
    start_btn.click(guard(partial(start, wb)),
                    [preset, source, corpus, upload, hf_name, run_name, init_from, *numbers],
                    status, api_name="train_start")
    stop_btn.click(guard(partial(stop, wb)), None, status, api_name="train_stop")
    resume_btn.click(guard(partial(resume, wb)), [resume_run, resume_steps], status,
                     api_name="train_resume")
    timer.tick(guard(partial(poll, wb)), [seen, controls.model],
               [status, curve, samples, controls.model, init_from, resume_run, seen, timer,
                start_btn, stop_btn], api_visibility="undocumented", show_progress="hidden",
               queue=False)  # a quick file read: keep it out of the generation queue
    gr.api(partial(_status_api, wb), api_name="train_status")


def _status_api(wb: Workbench) -> dict:
    """The training job's status as JSON (state, step, max_steps, loss, val_loss, tokens_per_s,
    eta_s, curve, samples, ...)."""
    return wb.training.status()
