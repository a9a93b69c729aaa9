"""The Chainlit app's event handlers: chat profiles are the engine's modes (Python assistant,
Free chat, Story), the settings panel feeds app.limits.sampling_params(), replies come from
Workbench.chat()/story(), and training goes through app.training (see training.py). This module
turns Chainlit events into those calls and their results into messages.

Chainlit's decorators register each handler when this module is imported: chainlit_app.py (the
file `chainlit run` loads) imports it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading

import chainlit as cl
from chainlit.config import config as chainlit_config

from app import workbench
from app.display import refusal_reason
from app.limits import MAX_SYSTEM_CHARS, SAMPLING_DEFAULTS, clean_text, sampling_params
from app.policy import RequestExposure, is_exposed
from app.workbench import USER_ERRORS

from . import conversation, saved, security, training
from .render import md_text, reply_footer, show_error, sources_element, stream_into, wait_in_line
from .widgets import chat_profiles, mode_of, parse_train_command, sampling_values, settings_widgets

log = logging.getLogger("workbench.chainlit")
TRAIN_COMMAND = re.compile(r"\s*/train(\s|$)")

# One Workbench (one model cache) for every session of this server. Training is offered only when
# the server is not reachable from other machines, unless its owner opts in (app.policy).
# `chainlit run` owns the command line, so the workbench's own settings come from the environment:
# WORKBENCH_DEVICE (auto, cpu, cuda, mps), WORKBENCH_PRECISION (auto, fp32, bf16, int8), and
# WORKBENCH_CHECKPOINTS / WORKBENCH_RUNS / WORKBENCH_DATA for where bundled models, training runs
# and training corpora live.


def _workbench() -> workbench.Workbench:
    try:
        return workbench.configure(
            device=os.environ.get("WORKBENCH_DEVICE", "auto").strip() or "auto",
            precision=os.environ.get("WORKBENCH_PRECISION", "auto").strip() or "auto",
            data_dir=os.environ.get("WORKBENCH_DATA") or None,
            exposed=RequestExposure(is_exposed(chainlit_config.run.host),
                                    security.current_request))
    except ValueError as e:
        raise SystemExit(f"error: WORKBENCH_DEVICE / WORKBENCH_PRECISION: {e}") from None


security.install()  # Host allowlist, socket Origin check, optional password (security.py)


wb = _workbench()


# ---------------------------------------------------------------------------------------------
# Session start: profile, settings panel, commands; re-attach to a running training job.


@cl.set_chat_profiles
async def _profiles(user=None, language=None):
    # Free chat starts on the Python-docs model: its landing view says what that will sound like.
    return chat_profiles({"chat": wb.models.free_chat_note(wb.models.default("chat"))})


@cl.on_chat_start
async def start() -> None:
    mode = mode_of(cl.user_session.get("chat_profile"))
    cl.user_session.set("history", [])
    values = {**SAMPLING_DEFAULTS, "model": wb.models.default(mode)}
    cl.user_session.set("loaded_model", values["model"])  # described only when it changes
    await cl.ChatSettings(settings_widgets(wb.models.choices(), values)).send()
    await cl.context.emitter.set_commands(training.COMMANDS)
    await training.reattach(wb)


@cl.on_chat_resume
async def resume(thread: dict) -> None:
    """A saved conversation opened again (from the thread list, a reload, after a restart).
    Chainlit shows its messages and gives the session the profile and settings saved with it
    (saved.save_thread_settings); this restores what the model sees (the conversation as it got
    it, conversation.restore), the settings panel with those values, Regenerate and Export on
    the latest answer, the /train command, and a training job that is still running."""
    mode = mode_of(cl.user_session.get("chat_profile"))
    values = {**SAMPLING_DEFAULTS, **current_settings()}
    if values.get("model") not in {spec for _, spec in wb.models.choices()}:
        values["model"] = wb.models.default(mode)  # a run deleted since: the mode's default
    cl.user_session.set("loaded_model", values["model"])
    latest = conversation.restore(thread, mode)
    await training.drop_live_progress(wb, thread)  # Chainlit sends the thread's steps after this
    await cl.ChatSettings(settings_widgets(wb.models.choices(), values)).send()
    await cl.context.emitter.set_commands(training.COMMANDS)
    if latest:
        for action in conversation.answer_actions(mode):
            await action.send(for_id=latest)
    # Chainlit sends the saved messages after this handler returns, and the page replaces the
    # messages it has with them: a training progress message sent now would be wiped, so the
    # tracker starts a moment later.
    asyncio.create_task(_reattach_soon())


async def _reattach_soon() -> None:
    await asyncio.sleep(1.0)
    await training.reattach(wb)


@cl.on_chat_end
async def end() -> None:
    """The page went away: stop writing its reply (a training job and its tracker go on)."""
    cancel_generation()


# ---------------------------------------------------------------------------------------------
# Settings: validated when changed (a clear message for a bad seed), applied to the next message.


@cl.on_settings_update
async def settings_changed(settings: dict) -> None:
    try:
        sampling_params(**sampling_values(settings))
        clean_text(settings.get("system") or "", "system prompt", max_chars=MAX_SYSTEM_CHARS,
                   allow_empty=True)
        spec = wb.models.resolve(settings.get("model"))
    except USER_ERRORS as e:
        await show_error(f"Settings not valid: {e}")
        return
    await saved.save_thread_settings()
    if spec != cl.user_session.get("loaded_model"):
        cl.user_session.set("loaded_model", spec)
        try:  # load now, so the next reply does not wait, and say what the model is
            about = await asyncio.to_thread(wb.models.describe, spec)
        except USER_ERRORS as e:
            await show_error(f"Cannot load that model: {e}")
            return
        note = ""
        if mode_of(cl.user_session.get("chat_profile")) == "chat":
            note = await asyncio.to_thread(wb.models.free_chat_note, spec)
        await cl.Message(content=f"Model: **{wb.models.label(spec)}** · {about}"
                         + (f"\n\n*{note}*" if note else ""), author="Settings").send()


def current_settings() -> dict:
    return cl.user_session.get("chat_settings") or {}


# ---------------------------------------------------------------------------------------------
# Messages: /train goes to training; everything else to the profile's mode.


@cl.on_message
async def on_message(message: cl.Message) -> None:
    text = message.content or ""
    try:
        if message.command == "train" or TRAIN_COMMAND.match(text):
            if message.command == "train":
                text = "/train " + text
            await training.handle_command(wb, parse_train_command(text))
        else:
            conversation.forget_from(message.id)  # an edited message: cut the chat there
            await reply_to(text, message.id)
            await saved.save_thread_settings()
    except USER_ERRORS as e:
        await show_error(str(e))
    except Exception as e:  # a bug, not bad input: log the traceback, show one line
        log.exception("message handler failed")
        await show_error(f"Something went wrong ({type(e).__name__}: {e}). The details are in "
                         "the server log.")


async def reply_to(text: str, message_id: str | None = None) -> None:
    """One turn in the profile's mode: a refusal with its reason, or the streamed answer.
    Bad input (an empty or over-long message, a bad seed, a model that cannot be loaded) raises
    one of USER_ERRORS, which on_message shows as a message."""
    mode = mode_of(cl.user_session.get("chat_profile"))
    settings = current_settings()
    history = cl.user_session.get("history") or []
    cancel = threading.Event()
    cl.user_session.set("cancel", cancel)
    params = sampling_params(**sampling_values(settings))
    spec = settings.get("model") or wb.models.default(mode)
    if mode == "story":
        reply = await asyncio.to_thread(wb.story, text, spec, params, cancel)
    else:
        system = (settings.get("system") or "") if mode == "chat" else ""
        reply = await asyncio.to_thread(wb.chat, text, history, mode, spec, params, cancel,
                                        system)

    if reply.refused:
        why = md_text(refusal_reason(reply.reason))
        await cl.Message(content=f"{reply.refusal}\n\n> **Why:** {why}",
                         metadata=conversation.turn(text, message_id, reply.refusal)).send()
        if mode != "story":
            history += [{"role": "user", "content": text, "id": message_id},
                        {"role": "assistant", "content": reply.refusal}]
            cl.user_session.set("history", history)
        return

    # The sources go with the message (sent with it at the end, or when a stop ends it early);
    # the history keeps only what the model wrote.
    sources = sources_element(reply.sources)
    msg = cl.Message(content="", elements=[sources] if sources else [],
                     actions=conversation.answer_actions(mode))
    answer = ""
    try:
        await wait_in_line(reply)  # only on a busy server
        answer = await stream_into(msg, reply)
    except asyncio.CancelledError:  # the stop button: keep what was written, then let go
        cancel.set()
        answer = msg.content
        if answer:
            msg.metadata = conversation.turn(text, message_id, answer)
            await msg.update()
        raise
    finally:
        if mode != "story" and answer:
            history += [{"role": "user", "content": text, "id": message_id},
                        {"role": "assistant", "content": answer}]
            cl.user_session.set("history", history)
        conversation.remember(text, message_id, msg)
    footer = reply_footer(reply, mode)
    if footer:
        await msg.stream_token(footer)
    if not msg.content:
        msg.content = "*(the model ended its answer without writing anything; try again, or " \
                      "raise the temperature)*"
    msg.metadata = conversation.turn(text, message_id, answer)  # saved: what resume restores
    await msg.send()


@cl.on_stop
async def on_stop() -> None:
    cancel_generation()


def cancel_generation() -> None:
    cancel = cl.user_session.get("cancel")
    if cancel is not None:
        cancel.set()


# ---------------------------------------------------------------------------------------------
# Training: the action buttons that training messages carry.


@cl.action_callback("train_start")
async def _train_start(action: cl.Action) -> None:
    await training.start_from_action(wb, action.payload)


@cl.action_callback("train_stop")
async def _train_stop(action: cl.Action) -> None:
    await training.stop(wb)


@cl.action_callback("train_help")
async def _train_help(action: cl.Action) -> None:
    await training.show_help(wb)


@cl.action_callback(conversation.REGENERATE)
async def _regenerate(action: cl.Action) -> None:
    try:
        problem = await conversation.regenerate(action, reply_to)
    except USER_ERRORS as e:
        problem = str(e)
    if problem:
        await show_error(problem)


@cl.action_callback(conversation.EXPORT)
async def _export(action: cl.Action) -> None:
    try:
        await conversation.export(wb, mode_of(cl.user_session.get("chat_profile")),
                                  current_settings())
    except USER_ERRORS as e:
        await show_error(str(e))


@cl.action_callback("use_model")
async def _use_model(action: cl.Action) -> None:
    spec = (action.payload or {}).get("spec")
    settings = {**current_settings(), "model": spec}
    try:
        wb.models.resolve(spec)
    except USER_ERRORS as e:
        await show_error(str(e))
        return
    await cl.ChatSettings(settings_widgets(wb.models.choices(), settings)).send()
    await settings_changed(settings)
