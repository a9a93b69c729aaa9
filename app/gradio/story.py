"""The Story tab: an opening, the story streaming in with tokens per second, and the sampling
explorer (the next-token candidates before and after each sampling stage).

The story is shown in a Textbox, so model output is always text. The explorer follows the
sampling controls: once opened, moving a slider redraws it.
"""

from __future__ import annotations

import threading
from functools import partial

import gradio as gr

from app.limits import EXPLORER_TOP, clean_text, sampling_params
from app.workbench import Workbench

from . import explorer
from .common import Controls, Throttle, guard, stats_line

OPENINGS = [
    "Once upon a time, in a small village by the sea,",
    "The old king called his three daughters to the hall and said,",
    "It was a dark and stormy night, and the ship",
    "When the fox met the crow in the forest,",
]


def write(wb: Workbench, prompt, model, **sampling):
    """Stream the story. Yields (story text, stats)."""
    params = sampling_params(**sampling)
    prompt = clean_text(prompt, "story opening")
    cancel = threading.Event()
    reply = wb.story(prompt, model, params, cancel=cancel)
    text = ""
    throttle = Throttle()
    yield "", "Writing…"
    try:
        for delta in reply:
            text += delta
            if throttle.ready():
                yield text, "Writing…"
    finally:
        cancel.set()
    yield text, stats_line(reply.stats)


def continue_story(prompt, story):
    """Move the story into the opening, so Write goes on from where it stopped."""
    return (prompt or "") + (story or ""), ""


def explore(wb: Workbench, prompt, story, top, model, **sampling):
    """The explorer chart for the text so far (opening + story). Returns (html, opened flag)."""
    params = sampling_params(**sampling)
    top = int(top) if isinstance(top, (int, float)) and float(top).is_integer() else top
    result = wb.explain_next((prompt or "") + (story or ""), model, params, top=top)
    return explorer.render(result, params), True


def follow(wb: Workbench, opened, prompt, story, top, model, **sampling):
    """Redraw the explorer when a control changes, once the person has opened it."""
    if not opened:
        return gr.skip(), opened
    return explore(wb, prompt, story, top, model, **sampling)


def add_token(wb: Workbench, prompt, story, top, model, **sampling):
    """Draw one token with the current settings, append it, and redraw the explorer."""
    params = sampling_params(**sampling).replace(max_new_tokens=1)
    text = (prompt or "") + (story or "")
    if not text.strip():
        raise ValueError("the story opening is empty: write a few words first")
    reply = wb.story(text, model, params)
    story = (story or "") + reply.text()
    chart, _ = explore(wb, prompt, story, top, model, **sampling)
    return story, chart, True


def build(demo: gr.Blocks, wb: Workbench, controls: Controls) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Opening", lines=3, max_lines=10,
                                placeholder="Once upon a time…", elem_id="story-prompt")
            gr.Examples(OPENINGS, inputs=prompt, label="Example openings")
        with gr.Column(scale=1, min_width=160):
            write_btn = gr.Button("Write", variant="primary", elem_id="story-write")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="story-stop")
            continue_btn = gr.Button("Continue from here", elem_id="story-continue")
    story = gr.Textbox(label="Story", lines=12, max_lines=30, interactive=False,
                       buttons=["copy"], elem_id="story-output")
    stats = gr.Markdown("", elem_id="story-stats")

    with gr.Accordion("Sampling explorer: what each control does to the next token",
                      open=False, elem_id="explorer"):
        gr.Markdown(
            "For the text so far, the model's most likely next tokens and their probability "
            "after each stage of sampling, in the order the engine applies them: repetition "
            "penalty, temperature, top-k, top-p. Move a slider in the sidebar and the chart "
            "follows. `␣` is a space, `↵` a new line.")
        with gr.Row():
            top = gr.Slider(3, EXPLORER_TOP.hi, value=EXPLORER_TOP.default, step=1,
                            label=EXPLORER_TOP.label, elem_id="explorer-top", scale=3)
            explore_btn = gr.Button("Show next-token candidates", variant="primary",
                                    elem_id="explorer-run", scale=1)
            add_btn = gr.Button("Add one sampled token", elem_id="explorer-add", scale=1)
        chart = gr.HTML("", elem_id="explorer-chart")
    opened = gr.State(False)

    writing = write_btn.click(guard(partial(write, wb)), **controls.inputs(prompt),
                              outputs=[story, stats], api_name="story", show_progress="minimal")
    entered = prompt.submit(guard(partial(write, wb)), **controls.inputs(prompt),
                            outputs=[story, stats], api_visibility="undocumented",
                            show_progress="minimal")
    stop_btn.click(None, None, None, cancels=[writing, entered], api_visibility="undocumented",
                   queue=False)
    continue_btn.click(continue_story, [prompt, story], [prompt, story],
                       api_visibility="undocumented", queue=False)
    explore_btn.click(guard(partial(explore, wb)), **controls.inputs(prompt, story, top),
                      outputs=[chart, opened], api_name="explain", show_progress="minimal")
    add_btn.click(guard(partial(add_token, wb)), **controls.inputs(prompt, story, top),
                  outputs=[story, chart, opened], api_name="add_token", show_progress="minimal")
    # .change (not .release) so typed values count too; always_last drops the values a drag
    # passes through.
    gr.on([top.change, *controls.triggers], guard(partial(follow, wb)),
          **controls.inputs(opened, prompt, story, top), outputs=[chart, opened],
          api_visibility="undocumented", show_progress="hidden", trigger_mode="always_last")
