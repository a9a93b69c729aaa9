"""The training loss curve in the Chainlit app: a Plotly chart under the progress message, the
same lines and colours as the Gradio app's (app.display.CURVE_COLORS)."""

from __future__ import annotations

from plotly import graph_objects as go

from app.display import CURVE_COLORS


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
    fig.update_layout(title="Loss", xaxis_title="step", yaxis_title="loss (cross-entropy)",
                      height=320, margin={"l": 50, "r": 20, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.25})
    return fig
