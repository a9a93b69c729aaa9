"""The Story tab: an opening, the story streaming in with tokens per second (the Story box holds
the whole text, opening first; "Continue from here" writes more at its end), and the sampling
explorer (the next-token candidates before and after each sampling stage).

The story is shown in a Textbox, so model output is always text. The explorer follows the
sampling controls: once opened, moving a slider redraws it.
"""

from __future__ import annotations

import threading
from functools import partial

import gradio as gr

from app.display import STORY_ABOUT, STORY_OPENINGS, STORY_PLACEHOLDER, queue_line
from app.limits import EXPLORER_TOP, MAX_INPUT_CHARS, clean_text, sampling_params
from app.workbench import Workbench

from . import explorer
from .common import Controls, Throttle, guard, stats_line

def write(wb: Workbench, prompt, model, **sampling):
    """Stream the story from the opening. Yields (story text, stats): the story is the opening
    as typed, then what the model writes."""
    prompt = clean_text(prompt, "story opening")
    yield from _extend(wb, prompt, model, **sampling)


def continue_story(wb: Workbench, prompt, story, model, **sampling):
    """Write more after the story so far (the opening, if nothing is written yet), appending."""
    text = story if (story or "").strip() else clean_text(prompt, "story opening")
    yield from _extend(wb, text, model, **sampling)


def _extend(wb: Workbench, text: str, model, **sampling):
    """Stream text + its continuation. The model sees the end of the text only (its window is
    far shorter than the input limit anyway), so a long story can go on and on."""
    params = sampling_params(**sampling)
    cancel = threading.Event()
    reply = wb.story(text[-MAX_INPUT_CHARS:], model, params, cancel=cancel)
    throttle = Throttle()
    try:
        for ahead in reply.waiting():  # only on a busy server
            yield text, queue_line(ahead)
        yield text, "Writing…"
        for delta in reply:
            text += delta
            if throttle.ready():
                yield text, "Writing…"
    finally:
        cancel.set()
    yield text, stats_line(reply.stats)


def _so_far(prompt, story) -> str:
    """The text the explorer looks at: the story when there is one (it starts with its
    opening), else the opening."""
    return story if (story or "").strip() else (prompt or "")


def explore(wb: Workbench, prompt, story, top, model, **sampling):
    """The explorer chart for the text so far (opening + story). Returns (html, opened flag)."""
    params = sampling_params(**sampling)
    top = int(top) if isinstance(top, (int, float)) and float(top).is_integer() else top
    result = wb.explain_next(_so_far(prompt, story)[-MAX_INPUT_CHARS:], model, params, top=top)
    return explorer.render(result, params), True


def follow(wb: Workbench, opened, prompt, story, top, model, **sampling):
    """Redraw the explorer when a control changes, once the person has opened it."""
    if not opened:
        return gr.skip(), opened
    return explore(wb, prompt, story, top, model, **sampling)


def add_token(wb: Workbench, prompt, story, top, model, **sampling):
    """Draw one token with the current settings, append it, and redraw the explorer."""
    params = sampling_params(**sampling).replace(max_new_tokens=1)
    text = _so_far(prompt, story)
    if not text.strip():
        raise ValueError("the story opening is empty: write a few words first")
    reply = wb.story(text[-MAX_INPUT_CHARS:], model, params)
    story = text + reply.text()
    chart, _ = explore(wb, prompt, story, top, model, **sampling)
    return story, chart, True


def build(demo: gr.Blocks, wb: Workbench, controls: Controls) -> None:
    gr.Markdown(f"*{STORY_ABOUT}*", elem_id="story-about")
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Opening", lines=3, max_lines=10,
                                placeholder=STORY_PLACEHOLDER, elem_id="story-prompt")
            gr.Examples([opening for _, opening in STORY_OPENINGS], inputs=prompt,
                        example_labels=[label for label, _ in STORY_OPENINGS],
                        label="Example openings", elem_id="story-examples")
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
    going_on = continue_btn.click(guard(partial(continue_story, wb)),
                                  **controls.inputs(prompt, story), outputs=[story, stats],
                                  api_name="story_continue", show_progress="minimal")
    stop_btn.click(None, None, None, cancels=[writing, entered, going_on],
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
