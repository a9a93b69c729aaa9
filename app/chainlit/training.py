"""Training from the chat: the /train command, its help with start buttons, and following the
job (tracker.py shows it in a task list and a progress message).

The job is engine.jobs' child process, started and stopped through app.training (the same calls
the Gradio app makes), so it outlives the page: a reloaded page, or another browser, re-attaches
to it (reattach()). Each Chainlit session has at most one tracker, an asyncio task that polls the
job's status once a second and updates that session's widgets; the job itself is shared.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import chainlit as cl

from app.limits import TRAINING
from app.training import ACTIVE, JobError
from app.workbench import USER_ERRORS

from .render import show_error
from .tracker import PROGRESS_KEY, Tracker
from .widgets import TrainCommand

COMMANDS = [{"id": "train", "icon": "dumbbell", "button": True, "persistent": False,
             "description": "Train a small model: /train [preset] [key=value ...]"}]

DEFAULT_PRESET = "cpu-demo"  # minutes on a laptop CPU
# /train keys -> wb.training.start() arguments (the short forms people type).
ALIASES = {"steps": "max_steps", "name": "run_name", "run": "run_name", "out": "run_name",
           "from": "init_from", "init": "init_from"}
ARGUMENTS = ("preset", "data", "run_name", "init_from")


def training_options(wb, options: dict) -> dict:
    """Keyword arguments for wb.training.start() from /train's key=value options.

    app.training checks values and ranges; this maps the command's words onto its arguments:
    short aliases, the default preset, and a corpus named the short way ("stories",
    "stories/stories.txt", "data/python/qa.jsonl") or by its full path.
    """
    kwargs: dict = {}
    for key, value in options.items():
        key = ALIASES.get(key, key)
        if key not in ARGUMENTS and key not in TRAINING:
            known = ", ".join(["preset", "data", "name", "init_from", "max_steps (or steps)"]
                              + [k for k in TRAINING if k != "max_steps"])
            raise ValueError(f"/train does not know the option {key!r}; it takes: {known}")
        if key in kwargs:
            raise ValueError(f"/train option {key!r} is given twice")
        kwargs[key] = value
    kwargs.setdefault("preset", DEFAULT_PRESET)
    corpora = wb.training.corpora()
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
    policy = wb.training.policy()
    if not policy.allowed:
        await _error(policy.reason)
        return
    presets = "\n".join(f"- `{name}`: {label.split(': ', 1)[-1]}"
                        for label, name in wb.training.presets())
    corpora = "\n".join(f"- `{short_name(path)}` {label.split(' ', 1)[-1]}"
                        for label, path in wb.training.corpora()) or "- none found in data/"
    text = (
        "**Train a model.** Type `/train [preset] [key=value ...]`, for example\n\n"
        "`/train cpu-demo max_steps=200 data=stories/stories.txt`\n\n"
        f"**Presets** (default `{DEFAULT_PRESET}`):\n{presets}\n\n"
        f"**Data** (`data=`; default the first):\n{corpora}\n\n"
        "**Options**: `max_steps` (or `steps`), `lr`, `batch_size`, `block_size`, "
        "`eval_every`, `save_every`, `log_every`, `seed`, `name` (the run's folder under "
        "runs/), `init_from` (a model from the settings list, to fine-tune it), `lora_rank` "
        "(with `init_from`: train LoRA adapters of this rank instead of the whole model).\n\n"
        f"{wb.training.device_notice()}")
    actions = []
    running = await asyncio.to_thread(wb.training.running)
    if running is None and wb.training.corpora():
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
    """Start a job with wb.training.start(**kwargs) and follow it in this session. kwargs come
    from training_options() (never straight from a client)."""
    try:
        status = await asyncio.to_thread(lambda: wb.training.start(**kwargs))
    except JobError as e:
        await _error(str(e))
        await reattach(wb)  # already running: show it here too
        return
    except USER_ERRORS as e:
        await _error(str(e))
        return
    # From the run's name: status["run_dir"] is hidden from a visitor on another machine.
    await follow(wb, str(wb.training.runs_dir / status["run"]), started=True)


async def stop(wb) -> None:
    try:
        status = await asyncio.to_thread(wb.training.stop)
    except USER_ERRORS as e:
        await _error(str(e))
        return
    if status.get("state") not in ACTIVE and _tracker() is None:
        await cl.Message(content="No training job is running.", author="Training").send()


async def reattach(wb) -> None:
    """After a page reload (a new session): follow the job that is still running, if any."""
    run_dir = await asyncio.to_thread(wb.training.running)
    if run_dir is not None:
        await follow(wb, run_dir, started=False)


async def drop_live_progress(wb, thread: dict) -> None:
    """A saved conversation being resumed while its run still goes on: leave the run's saved
    progress message out of what the page gets (it stopped updating when its page went away;
    reattach() shows the run live). Finished runs keep their last progress in the thread."""
    run_dir = await asyncio.to_thread(wb.training.running)
    if run_dir is not None:
        live = Path(run_dir).name
        thread["steps"] = [step for step in thread.get("steps") or []
                           if (step.get("metadata") or {}).get(PROGRESS_KEY) != live]


def _tracker() -> Tracker | None:
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


async def _error(text: str) -> None:
    await show_error(text, author="Training")
