"""Following a training job in one Chainlit session: a task list (the side panel) and one
message with a Stop button, updated as the job's status changes; at the end a summary with a
button to chat with the new model. The job's status comes from app.training, polled once a second.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import chainlit as cl
from chainlit.config import FILES_DIRECTORY
from chainlit.session import WebsocketSession

from app.display import progress_parts
from app.markdown import plain
from app.training import ACTIVE

from .curve import loss_figure
from .render import show_error
from .widgets import settings_widgets

log = logging.getLogger("workbench.chainlit")
POLL_S = 1.0
# The progress message's metadata names its run: a saved conversation resumed while that run
# still goes on leaves it out (training.drop_live_progress), the new tracker shows it live.
PROGRESS_KEY = "training_run"


class Tracker:
    """One session's view of one run; begin() starts the polling task."""

    def __init__(self, wb, run_dir: str) -> None:
        self.wb = wb
        self.run_dir = run_dir
        self.name = Path(run_dir).name
        self.task: asyncio.Task | None = None
        self.tasks = cl.TaskList(status="Starting")
        self.prepare = cl.Task(title="Prepare the data and the model", status=cl.TaskStatus.RUNNING)
        self.train = cl.Task(title="Train", status=cl.TaskStatus.READY)
        self.save = cl.Task(title="Save the model", status=cl.TaskStatus.READY)
        self.message: cl.Message | None = None
        self.shown = ""
        self.plot_id = str(uuid.uuid4())  # the loss chart: one element, re-sent as it grows
        self.plotted = 0  # curve points in the chart the page has
        self.polls = 0

    def done(self) -> bool:
        return self.task is not None and self.task.done()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def send_tasks(self) -> None:
        # Elements are stored under Chainlit's .files/ folder, which another Chainlit server
        # started from the same folder deletes when it exits; without it every update would fail.
        FILES_DIRECTORY.mkdir(exist_ok=True)
        await self.tasks.send()

    async def begin(self, started: bool) -> None:
        for t in (self.prepare, self.train, self.save):
            await self.tasks.add_task(t)
        await self.send_tasks()
        verb = "Started" if started else "Following"
        self.message = cl.Message(
            content=f"{verb} training run **{self.name}**…", author="Training",
            metadata={PROGRESS_KEY: self.name},
            actions=[cl.Action(name="train_stop", label="Stop training", icon="square",
                               payload={}, tooltip="Save a checkpoint and end the run")])
        await self.message.send()
        # A task of its own (not the message handler's), so Chainlit's stop button, which
        # cancels the handler, does not end the tracking. It lives until the job ends or Chainlit
        # deletes the session: a dropped connection that comes back (the same session) finds it
        # still going; a reloaded page is a new session with a tracker of its own.
        self.session_id = cl.context.session.id
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while WebsocketSession.get_by_id(self.session_id) is not None:
                status = await asyncio.to_thread(self.wb.training.status, self.run_dir)
                await self._show(status)
                if status["state"] not in ACTIVE:
                    await self._finish(status)
                    return
                await asyncio.sleep(POLL_S)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or a lost file: say so here; the job itself goes on
            log.exception("training tracker failed")
            await show_error(f"Lost track of training run {self.name} ({type(e).__name__}: "
                             f"{e}); the run goes on. Reload the page to follow it again.",
                             author="Training")

    async def _show(self, s: dict) -> None:
        line = progress_line(s)
        if s.get("step") or s.get("loss") is not None:
            self.prepare.status = cl.TaskStatus.DONE
            self.train.status = cl.TaskStatus.RUNNING
        self.train.title = line
        self.tasks.status = {"running": f"{percent(s)}%", "stopping": "Stopping",
                             "starting": "Starting"}.get(s["state"], s["state"].capitalize())
        sample = s.get("samples") or []
        text = f"Training run **{self.name}** · {s['state']}\n\n{line}"
        if sample and s["state"] in ACTIVE:
            last = sample[-1]
            text += (f"\n\nSample at step {last['step']}:\n\n"
                     f"```text\n{_fence_safe(clip(last['prompt'] + last['text']))}\n```")
        if text != self.shown:
            self.shown = text
            await self.send_tasks()
            self.message.content = text
            await self.message.update()
        await self._plot(s.get("curve") or [])

    async def _plot(self, curve: list) -> None:
        """The live loss curve under the progress message, re-sent (same element id, so the
        page replaces it) when the curve has new points."""
        self.polls += 1
        if len(curve) == self.plotted or self.message is None or self.polls < 2:
            return  # not on the first poll: a page being reloaded shows no chat if an element
            # comes with the session's first messages (seen with Chainlit 2.12)
        self.plotted = len(curve)
        figure = loss_figure(curve)
        if figure is not None:
            chart = cl.Plotly(name="loss", figure=figure, display="inline", size="large",
                              id=self.plot_id)
            await chart.send(for_id=self.message.id)

    async def _finish(self, s: dict) -> None:
        state = s["state"]
        trained = bool(s.get("step"))
        if state == "failed":
            # Failed before its first step (bad data, say): the preparation failed, the rest
            # never ran; later: the training failed.
            self.prepare.status = cl.TaskStatus.DONE if trained else cl.TaskStatus.FAILED
            self.train.status = cl.TaskStatus.FAILED if trained else cl.TaskStatus.READY
            if not trained:
                self.train.title = "Train (not started)"
            self.save.status = cl.TaskStatus.READY
        else:
            for t in (self.prepare, self.train, self.save):
                t.status = cl.TaskStatus.DONE
        self.tasks.status = state.capitalize()
        await self.send_tasks()
        await self.message.remove_actions()
        spec = self._model_spec()
        if state == "failed":
            error = s.get("error") or "no reason given"
            self.message.content = (f"Training run **{self.name}** · failed"
                                    + (f"\n\n{progress_line(s)}" if trained else ""))
            await self.message.update()
            text = f"Training run **{self.name}** failed: {plain(error)}"  # may quote a file
            log = (s.get("log") or "").strip().splitlines()
            only_the_error = len(log) == 1 and log[0].removeprefix("error:").strip() == error
            if log and not only_the_error:
                log = "\n".join(log)
                text += f"\n\nThe end of its log:\n\n```text\n{_fence_safe(log)}\n```"
            await cl.Message(content=text, author="Training").send()
            return
        what = "finished" if state == "finished" else f"stopped at step {s.get('step')}"
        figures = ", ".join(f"{name} {s[key]:.3f}" for name, key in
                            (("loss", "loss"), ("validation loss", "val_loss"))
                            if s.get(key) is not None)
        text = f"Training run **{self.name}** {what}" + (f" ({figures})." if figures else ".")
        actions = []
        if spec:
            text += " The model is now in the settings' model list."
            actions.append(cl.Action(name="use_model", label="Chat with this model",
                                     icon="message-circle", payload={"spec": spec}))
            await self._refresh_settings()
        else:
            text += " It stopped before saving a checkpoint, so there is no model to use."
        await cl.Message(content=text, actions=actions, author="Training").send()

    def _model_spec(self) -> str | None:
        return next((spec for _label, spec in self.wb.models.choices()
                     if Path(spec) == Path(self.run_dir)), None)

    async def _refresh_settings(self) -> None:
        """Re-send the settings panel so its model list shows the new run (values kept)."""
        values = cl.user_session.get("chat_settings") or {}
        await cl.ChatSettings(settings_widgets(self.wb.models.choices(), values)).send()


def percent(s: dict) -> int:
    if not s.get("max_steps"):
        return 0
    return int(100 * (s.get("step") or 0) / s["max_steps"])


def progress_line(s: dict) -> str:
    """"Step 120/300 · loss 3.124 · validation loss 3.301 · 5,400 tokens/s · ETA 42 s"."""
    if s["state"] == "starting" or (not s.get("step") and s.get("loss") is None):
        return "Preparing the data and the model…"
    return " · ".join(progress_parts(s))


def clip(text: str, lines: int = 12, chars: int = 600) -> str:
    """The end of a long sample, so the progress message stays small."""
    text = "\n".join(text.strip("\n").splitlines()[-lines:])
    return text if len(text) <= chars else "…" + text[-chars:]


def _fence_safe(text: str) -> str:
    """Text for a ``` block: a model's own ``` would end the block early."""
    return text.replace("```", "`\u200b``")
