"""The training loss curve in the Chainlit app: a Plotly chart under the progress message, the
same lines and colours as the Gradio app's (app.display.CURVE_COLORS).

Chainlit draws the figure as it is given, whatever the page's theme (dark by default, with a
toggle): Plotly's default template paints a white paper and a light blue plot. So the figure has
no background of its own (the message's shows through) and greys that read on dark and light
alike for its text, axes and grid."""

from __future__ import annotations

from plotly import graph_objects as go

from app.display import CURVE_COLORS

TRANSPARENT = "rgba(0,0,0,0)"
TEXT = "#7f7f7f"  # mid grey: 4:1 contrast on Chainlit's dark background and on white
GRID = "rgba(148,163,184,0.25)"  # a faint slate line on either background


def loss_figure(curve) -> go.Figure | None:
    """A line per split (train, validation) from a training status's curve points
    ([{"step", "loss", "split"}]); None before there are any."""
    points = list(curve or [])
    if not points:
        return None
    fig = go.Figure()
    for split, color in CURVE_COLORS.items():
        mine = [p for p in points if p["split"] == split]
        if mine:  # one point shows as a dot until a line can be drawn
            fig.add_trace(go.Scatter(x=[p["step"] for p in mine], y=[p["loss"] for p in mine],
                                     name=split, mode="lines+markers" if len(mine) < 3 else "lines",
                                     line={"color": color, "width": 2}))
    axis = {"color": TEXT, "gridcolor": GRID, "linecolor": GRID, "zerolinecolor": GRID}
    fig.update_layout(title="Loss", xaxis_title="step", yaxis_title="loss (cross-entropy)",
                      height=320, margin={"l": 50, "r": 20, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.25},
                      paper_bgcolor=TRANSPARENT, plot_bgcolor=TRANSPARENT,
                      font={"color": TEXT}, xaxis=axis, yaxis=axis,
                      modebar={"bgcolor": TRANSPARENT, "color": TEXT,
                               "activecolor": CURVE_COLORS["train"]})
    return fig
