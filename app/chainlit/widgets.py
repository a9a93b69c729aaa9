"""What the Chainlit app shows: chat profiles and their starters, the settings panel, the /train
command's grammar and help. Chainlit objects are built here from app data (app.limits,
app.display); no logic the Gradio app also needs.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import chainlit as cl
from chainlit.input_widget import Select, Slider, TextInput

from app.display import ABOUT_MODELS, MODE_LABELS, STORY_ABOUT, STORY_OPENINGS
from app.limits import MAX_SYSTEM_CHARS, SAMPLING, SAMPLING_DEFAULTS, SAMPLING_FIELDS

# Engine mode -> (one-line description, starters as (label, message, icon)). The profile names
# are the modes' labels (app.display.MODE_LABELS), the same as the Gradio app's.
PROFILES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "python": (
        "Answers **Python programming** questions from the Python documentation, with the "
        "sources under each answer, and politely declines anything else, saying why.",
        [("Reverse a list", "How do I reverse a list in Python?", "/public/icons/code.svg"),
         ("Read a file", "How do I read a text file line by line?", "/public/icons/code.svg"),
         ("Explain a traceback",
          "What does TypeError: 'NoneType' object is not subscriptable mean?",
          "/public/icons/bug.svg"),
         ("Sort a dict", "How can I sort a dictionary by its values?", "/public/icons/code.svg")],
    ),
    "chat": (
        "Talk about anything with the selected model; no topic filter.",
        [("Say hello", "Hello! What can you tell me about yourself?", "/public/icons/chat.svg"),
         ("A fun fact", "Tell me something interesting about the sea.", "/public/icons/chat.svg"),
         ("Plan a day", "What should I do on a rainy Sunday?", "/public/icons/chat.svg")],
    ),
    "story": (
        f"Type the opening of a story; the model writes what comes next. {STORY_ABOUT}",
        [(label, opening, "/public/icons/book.svg") for label, opening in STORY_OPENINGS],
    ),
}
DEFAULT_MODE = "python"


def chat_profiles(notes: dict[str, str] | None = None) -> list[cl.ChatProfile]:
    """The profiles; notes: mode -> a line about the model it starts on (shown in italics)."""
    notes = notes or {}
    return [
        cl.ChatProfile(
            # The landing view shows the description: what the mode does, then what the models are.
            name=MODE_LABELS[mode], markdown_description="\n\n".join(
                [description] + [f"*{n}*" for n in (notes.get(mode), ABOUT_MODELS) if n]),
            default=(mode == DEFAULT_MODE),
            icon=starters[0][2],
            starters=[cl.Starter(label=label, message=message, icon=icon)
                      for label, message, icon in starters] + [TRAIN_STARTER])
        for mode, (description, starters) in PROFILES.items()
    ]


# Every profile's last starter opens the training help (the /train command with no options).
TRAIN_STARTER = cl.Starter(label="Train a model", message="help", command="train",
                           icon="/public/icons/train.svg")


def mode_of(profile: str | None) -> str:
    """The engine mode for a chat profile's name (none or an unknown one: the default mode)."""
    return next((mode for mode, name in MODE_LABELS.items() if name == profile), DEFAULT_MODE)


# ---------------------------------------------------------------------------------------------
# Settings panel. Values arrive as the widgets' raw values; app.limits checks them.

def settings_widgets(choices: list[tuple[str, str]], values: dict) -> list:
    """The settings panel: the model picker, then a slider per sampling control (ranges, steps,
    defaults and help from app.limits.SAMPLING, the same as the Gradio app) and the seed.

    choices: (label, spec) pairs in picker order. values: the current settings (missing keys take
    the defaults), so re-sending the panel, e.g. after a training run adds a model, keeps what
    the person chose.
    """
    v = {**SAMPLING_DEFAULTS, **{k: x for k, x in values.items() if x is not None}}
    items = {label: spec for label, spec in choices}
    model = v.get("model")
    if model not in items.values():
        model = choices[0][1] if choices else None
    widgets = [Select(id="model", label="Model", items=items, initial_value=model,
                      description="Bundled models, your finished training runs, and GPT-2 from "
                                  "the Hugging Face hub (hub models need the network the first "
                                  "time).")]
    for name, limit in SAMPLING.items():
        if name == "seed":
            continue  # a text box below: empty means a fresh draw
        widgets.append(Slider(id=name, label=limit.label, initial=v[name], min=limit.lo,
                              max=limit.hi, step=limit.step, description=limit.help))
    seed = v.get("seed")
    widgets.append(TextInput(id="seed", label=SAMPLING["seed"].label,
                             initial="" if seed is None else str(seed),
                             placeholder="random", description=SAMPLING["seed"].help))
    widgets.append(TextInput(id="system", label="System prompt (free chat)", multiline=True,
                             initial=str(v.get("system") or ""),
                             placeholder="e.g. You are a friendly pirate. Answer in one sentence.",
                             description="A persona or instructions put before the "
                                         "conversation in free chat (up to "
                                         f"{MAX_SYSTEM_CHARS:,} characters)."))
    return widgets


def sampling_values(settings: dict) -> dict:
    """The sampling part of the settings, as keyword arguments for app.limits.sampling_params()."""
    return {name: settings.get(name) for name in SAMPLING_FIELDS}


# ---------------------------------------------------------------------------------------------
# The /train command: `/train [preset] [key=value ...]`.


@dataclass(frozen=True)
class TrainCommand:
    help: bool  # no options given, or "help": show what can be set
    options: dict  # raw key -> string value; app.training checks and converts


def parse_train_command(text: str) -> TrainCommand:
    """Parse what follows /train. Raises ValueError naming the bad part.

    `/train`            -> help
    `/train tiny`       -> preset=tiny
    `/train preset=mini steps=300 data=data/stories lr=3e-4`
    """
    text = (text or "").strip()
    if text == "/train" or text.startswith(("/train ", "/train\t", "/train\n")):
        text = text[len("/train"):]
    try:
        parts = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"cannot read the /train options ({e}); quote values that hold "
                         "spaces, e.g. data=\"my texts/a.txt\"") from None
    if not parts or parts == ["help"]:
        return TrainCommand(help=True, options={})
    options: dict[str, str] = {}
    for i, part in enumerate(parts):
        if "=" not in part:
            if i == 0:
                options["preset"] = part
                continue
            raise ValueError(f"/train option {part!r} needs a value, like {part}=...; "
                             "write options as key=value")
        key, _, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not key or not value:
            raise ValueError(f"/train option {part!r} is incomplete; write key=value")
        if key in options:
            raise ValueError(f"/train option {key!r} is given twice")
        options[key] = value
    return TrainCommand(help=False, options=options)
