"""Training from the chat: the /train command, its help with start buttons, and a tracker that
follows the engine job in a task list and a progress message.

The job is engine.jobs' child process, started and stopped through engine.service (the same calls
the Gradio app makes), so it outlives the page: a reloaded page, or another browser, re-attaches
to it (reattach()). Each Chainlit session has at most one tracker, an asyncio task that polls the
job's status once a second and updates that session's widgets; the job itself is shared.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import chainlit as cl
from chainlit.config import FILES_DIRECTORY
from chainlit.session import WebsocketSession

from engine.errors import USER_ERRORS
from engine.jobs import ACTIVE, JobError
from engine.service import progress_parts

from .chainlit_widgets import TrainCommand, settings_widgets

log = logging.getLogger("workbench.chainlit")

COMMANDS = [{"id": "train", "icon": "dumbbell", "button": True, "persistent": False,
             "description": "Train a small model: /train [preset] [key=value ...]"}]

DEFAULT_PRESET = "cpu-demo"  # minutes on a laptop CPU
POLL_S = 1.0
# /train keys -> service.start_training() arguments (the short forms people type).
ALIASES = {"steps": "max_steps", "name": "run_name", "run": "run_name", "out": "run_name",
           "from": "init_from", "init": "init_from"}
ARGUMENTS = ("preset", "data", "run_name", "init_from")


def training_options(wb, options: dict) -> dict:
    """Keyword arguments for wb.start_training() from /train's key=value options.

    The engine checks values and ranges; this maps the command's words onto its arguments: short
    aliases, the default preset, and a corpus named the short way ("stories",
    "stories/stories.txt", "data/python/qa.jsonl") or by its full path.
    """
    from engine.service import TRAIN_OPTIONS

    kwargs: dict = {}
    for key, value in options.items():
        key = ALIASES.get(key, key)
        if key not in ARGUMENTS and key not in TRAIN_OPTIONS:
            known = ", ".join(["preset", "data", "name", "init_from", "max_steps (or steps)"]
                              + [k for k in TRAIN_OPTIONS if k != "max_steps"])
            raise ValueError(f"/train does not know the option {key!r}; it takes: {known}")
        if key in kwargs:
            raise ValueError(f"/train option {key!r} is given twice")
        kwargs[key] = value
    kwargs.setdefault("preset", DEFAULT_PRESET)
    corpora = wb.training_data()
    if "data" not in kwargs:
        if not corpora:
            raise ValueError("no bundled corpus found in data/; name one with data=...")
        kwargs["data"] = corpora[0][1]
    else:
        kwargs["data"] = corpus_path(kwargs["data"], corpora)
    return kwargs


def corpus_path(name: str, corpora: list[tuple[str, str]]) -> str:
    """The bundled corpus a person named: its full path, a tail of it, or its folder name."""
    wanted = name.strip()
    for _label, path in corpora:
        p = Path(path)
        tails = {str(p), f"{p.parent.name}/{p.name}", f"data/{p.parent.name}/{p.name}", p.name}
        if wanted in tails or wanted.strip("/") in tails:
            return path
    folders = [path for _label, path in corpora if Path(path).parent.name == wanted.strip("/")]
    if len(folders) == 1:
        return folders[0]
    names = ", ".join(short_name(path) for _label, path in corpora) or "none found"
    if folders:
        raise ValueError(f"data={name} matches several corpora; choose one of: {names}")
    raise ValueError(f"unknown corpus data={name}; choose one of: {names}")


def short_name(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


# ---------------------------------------------------------------------------------------------
# The command and the buttons.


async def handle_command(wb, command: TrainCommand) -> None:
    if command.help:
        await show_help(wb)
        return
    try:
        kwargs = training_options(wb, command.options)
    except ValueError as e:
        await _error(str(e))
        return
    await start(wb, kwargs)


async def show_help(wb) -> None:
    policy = wb.training_policy()
    if not policy.allowed:
        await _error(policy.reason)
        return
    presets = "\n".join(f"- `{name}`: {label.split(': ', 1)[-1]}"
                        for label, name in wb.training_presets())
    corpora = "\n".join(f"- `{short_name(path)}` {label.split(' ', 1)[-1]}"
                        for label, path in wb.training_data()) or "- none found in data/"
    text = (
        "**Train a model.** Type `/train [preset] [key=value ...]`, for example\n\n"
        "`/train cpu-demo max_steps=200 data=stories/stories.txt`\n\n"
        f"**Presets** (default `{DEFAULT_PRESET}`):\n{presets}\n\n"
        f"**Data** (`data=`; default the first):\n{corpora}\n\n"
        "**Options**: `max_steps` (or `steps`), `lr`, `batch_size`, `block_size`, "
        "`eval_every`, `save_every`, `log_every`, `seed`, `name` (the run's folder under "
        "runs/), `init_from` (a model from the settings list, to fine-tune it).\n\n"
        f"{wb.device_notice()}")
    actions = []
    running = await asyncio.to_thread(wb.jobs.running)
    if running is None and wb.training_data():
        actions.append(cl.Action(name="train_start", label=f"Start a {DEFAULT_PRESET} run",
                                 icon="play", payload={"preset": DEFAULT_PRESET},
                                 tooltip="A small model on the first corpus; a few minutes"))
    elif running is not None:
        actions.append(cl.Action(name="train_stop", label="Stop training", icon="square",
                                 payload={}, tooltip="Save a checkpoint and end the run"))
    await cl.Message(content=text, actions=actions, author="Training").send()


ACTION_KEYS = ("preset",)  # what a start button's payload may carry


async def start_from_action(wb, payload) -> None:
    """The help's start button. Its payload comes back from the browser, so a client can send
    anything: only a preset name is taken from it, and it goes through the same checks as
    /train (training_options); anything else is refused with a message."""
    if not isinstance(payload, dict):
        await _error("This start button sent no settings; type /train to start a run.")
        return
    unknown = sorted(str(k) for k in payload if k not in ACTION_KEYS)
    if unknown:
        await _error(f"A start button cannot set {', '.join(unknown)}; type /train with the "
                     "options you want (/train help lists them).")
        return
    preset = payload.get("preset")
    if not isinstance(preset, str) or not preset.strip():
        await _error("This start button names no preset; type /train [preset] to start a run.")
        return
    try:
        kwargs = training_options(wb, {"preset": preset.strip()})
    except ValueError as e:
        await _error(str(e))
        return
    await start(wb, kwargs)


async def start(wb, kwargs: dict) -> None:
    """Start a job with wb.start_training(**kwargs) and follow it in this session. kwargs come
    from training_options() (never straight from a client)."""
    try:
        status = await asyncio.to_thread(lambda: wb.start_training(**kwargs))
    except JobError as e:
        await _error(str(e))
        await reattach(wb)  # already running: show it here too
        return
    except USER_ERRORS as e:
        await _error(str(e))
        return
    await follow(wb, status["run_dir"], started=True)


async def stop(wb) -> None:
    try:
        status = await asyncio.to_thread(wb.stop_training)
    except USER_ERRORS as e:
        await _error(str(e))
        return
    if status.get("state") not in ACTIVE and _tracker() is None:
        await cl.Message(content="No training job is running.", author="Training").send()


async def reattach(wb) -> None:
    """After a page reload (a new session): follow the job that is still running, if any."""
    job = await asyncio.to_thread(wb.jobs.running)
    if job is not None:
        await follow(wb, str(job.run_dir), started=False)


def _tracker() -> "Tracker | None":
    tracker = cl.user_session.get("tracker")
    return tracker if tracker is not None and not tracker.done() else None


async def follow(wb, run_dir: str, started: bool) -> None:
    current = _tracker()
    if current is not None:
        if current.run_dir == run_dir:
            return
        current.cancel()
    tracker = Tracker(wb, run_dir)
    cl.user_session.set("tracker", tracker)
    await tracker.begin(started)


# ---------------------------------------------------------------------------------------------
# The tracker: one task list (the side panel) and one message with a Stop button, updated as the
# job's status changes; at the end a summary with a button to chat with the new model.


class Tracker:
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
        from engine.jobs import Job

        job = Job(self.run_dir)
        try:
            while WebsocketSession.get_by_id(self.session_id) is not None:
                status = await asyncio.to_thread(self.wb.training_status, job)
                await self._show(status)
                if status["state"] not in ACTIVE:
                    await self._finish(status)
                    return
                await asyncio.sleep(POLL_S)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or a lost file: say so here; the job itself goes on
            log.exception("training tracker failed")
            await _error(f"Lost track of training run {self.name} ({type(e).__name__}: {e}); "
                         "the run goes on. Reload the page to follow it again.")

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
            text = f"Training run **{self.name}** failed: {error}"
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
        return next((spec for _label, spec in self.wb.model_choices()
                     if Path(spec) == Path(self.run_dir)), None)

    async def _refresh_settings(self) -> None:
        """Re-send the settings panel so its model list shows the new run (values kept)."""
        values = cl.user_session.get("chat_settings") or {}
        await cl.ChatSettings(settings_widgets(self.wb.model_choices(), values)).send()


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


async def _error(text: str) -> None:
    await cl.ErrorMessage(content=text, author="Training").send()

