"""The Gradio app: `build_demo(wb)` makes the page (app/gradio/layout.py), `launch` serves it.
One module per tab (chat.py, story.py with explorer.py, train.py) and common.py for what every
tab uses."""

from .layout import build_demo, launch

__all__ = ["build_demo", "launch"]
