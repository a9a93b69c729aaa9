"""The Gradio app's page: a sidebar with the model picker and sampling controls shared by every
tab, and the Chat, Story and Train tabs (app/gradio/chat.py, story.py, train.py).

    demo = build_demo(workbench.configure(...))
    launch(demo, host="127.0.0.1", port=7860)

The logic is in app (app.workbench is what both front ends hold) and the engine; this package
turns widgets into those calls. API endpoints (gradio_client): /chat, /chat_retry, /story,
/explain, /add_token, /models, /model_info, /train_start, /train_stop, /train_resume,
/train_status.
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from app.display import ABOUT_MODELS
from app.workbench import USER_ERRORS, Workbench

from . import chat, security, story, train
from .common import CSS, Controls, guard, sampling_components, show_text

TITLE = "GPT Workbench"
INTRO = ("Chat with, write with and train small GPT-2 models, on your own machine. "
         "Pick a model and tune the sampling in the sidebar; they apply to every tab.")


# The page's head: the light/dark choice (the sidebar's toggle stores it in this browser), and on
# a phone-sized screen the sidebar starts closed, so the chat is what a person sees first.
LAYOUT_HEAD = """<script>
(() => {
  const key = "gpt-workbench-theme";
  const apply = () => {
    const saved = localStorage.getItem(key);
    if (saved) document.body.classList.toggle("dark", saved === "dark");
  };
  let tries = 0;
  const settle = setInterval(() => {
    apply();  // after Gradio has set its own theme on the body
    const bar = document.getElementById("sidebar");
    if (bar && window.innerWidth < 768 && bar.classList.contains("open")) {
      const toggle = bar.querySelector(".toggle-button");
      if (toggle) toggle.click();
    }
    if (++tries > 40 || (bar && !(window.innerWidth < 768 && bar.classList.contains("open")))) {
      clearInterval(settle);
    }
  }, 100);
})();
</script>"""
THEME_TOGGLE_JS = """() => {
  const dark = !document.body.classList.contains("dark");
  document.body.classList.toggle("dark", dark);
  localStorage.setItem("gpt-workbench-theme", dark ? "dark" : "light");
}"""


def model_dropdown_update(wb: Workbench, current: str | None = None):
    choices = wb.models.choices()
    specs = [spec for _, spec in choices]
    value = current if current in specs else (wb.models.default() if choices else None)
    return gr.update(choices=choices, value=value)


def model_info(wb: Workbench, spec):
    """One line about the chosen model and its card (loads it, so the first answer does not
    wait)."""
    try:
        line, card = wb.models.describe(spec), wb.models.card(spec).strip()
    except USER_ERRORS as e:
        # Shown under the picker rather than as an error pop-up on every page load (a hub
        # model offline, say); generating with it gives the same message as an error.
        return f"**Cannot load this model.** {show_text(str(e))}", ""
    return line, card or "*This model has no card.*"


def list_models(wb: Workbench) -> list[list[str]]:
    """[[label, spec], ...]: what the model picker offers (API helper)."""
    return [[label, spec] for label, spec in wb.models.choices()]


def suggest(wb: Workbench, mode: str, current):
    return gr.update(value=wb.models.suggest(mode, current))


def build_demo(wb: Workbench) -> gr.Blocks:
    with gr.Blocks(title=TITLE, fill_width=True) as demo:
        with gr.Sidebar(label="Model and sampling", open=True, width=330, elem_id="sidebar"):
            model = gr.Dropdown(wb.models.choices(), value=wb.models.default("python"),
                                label="Model", elem_id="model", allow_custom_value=True,
                                info="Bundled models work offline; hub models need the network "
                                     "the first time.")
            info = gr.Markdown("", elem_id="model-info")
            with gr.Accordion("Model card", open=False, elem_id="model-card-box"):
                card = gr.Markdown("", elem_id="model-card", sanitize_html=True)
            with gr.Row():
                refresh = gr.Button("Refresh the list", size="sm", elem_id="model-refresh")
                theme = gr.Button("Light / dark", size="sm", elem_id="theme-toggle")
            gr.Markdown("### Sampling")
            sampling = sampling_components()
        controls = Controls(model=model, sampling=sampling)

        gr.Markdown(f"# {TITLE}\n{INTRO}\n\n*{ABOUT_MODELS}*", elem_id="header")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Chat", id="chat", elem_id="tab-chat") as chat_tab:
                chat.build(demo, wb, controls)
            with gr.Tab("Story", id="story", elem_id="tab-story") as story_tab:
                story.build(demo, wb, controls)
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                train.build(demo, wb, controls)

        model.change(guard(partial(model_info, wb)), model, [info, card], api_name="model_info",
                     show_progress="minimal")
        refresh.click(partial(model_dropdown_update, wb), model, model,
                      api_visibility="undocumented", queue=False)
        theme.click(None, None, None, js=THEME_TOGGLE_JS, api_visibility="undocumented",
                    queue=False)
        # The bundled models are made for one tab each: follow the tab, unless the person
        # picked something else.
        chat_tab.select(partial(suggest, wb, "python"), model, model,
                        api_visibility="undocumented", queue=False)
        story_tab.select(partial(suggest, wb, "story"), model, model,
                         api_visibility="undocumented", queue=False)
        gr.api(partial(list_models, wb), api_name="models")
        demo.load(guard(partial(model_info, wb)), model, [info, card],
                  api_visibility="undocumented")
        # What this visitor may load (app.policy judges each request: no gpt2-large/xl for a
        # visitor through a proxy, unless the owner allows them).
        demo.load(partial(model_dropdown_update, wb), model, model,
                  api_visibility="undocumented", queue=False)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860,
           share: bool = False, concurrency: int = 8, allowed_hosts: str | None = None,
           api=None, **kwargs):
    """Queue and launch. `concurrency` generations run at once; more wait in the queue.
    The server answers only to loopback names and `allowed_hosts` (app.gradio.security).
    api: app.openai_api.create_app's app, served at /v1 on the same port (`--api`)."""
    demo.queue(default_concurrency_limit=concurrency, max_size=256)
    demo.delete_cache = security.UPLOAD_CLEANUP  # read by launch(): old uploads are deleted
    options = {**security.launch_options(host, share, allowed_hosts), **kwargs}
    if api is not None:  # routes given to Gradio's FastAPI app come before its own
        from starlette.routing import Mount

        from app.openai_api import API_PATH
        options["app_kwargs"] = {**options.get("app_kwargs", {}),
                                 "routes": [Mount(API_PATH, api)]}
    return demo.launch(server_name=host, server_port=port, share=share, css=CSS,
                       theme=gr.themes.Soft(), footer_links=["api", "gradio"],
                       head=chat.COPY_MESSAGE_HEAD + LAYOUT_HEAD,
                       show_error=True, **options)
