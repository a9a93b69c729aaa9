"""The instruction template shared by instruction tuning (train.py) and chat (assistant.py).

Alpaca's layout without its long preamble: the bundled models have small context windows, and
the preamble carries no information once a model is tuned on this format. Training appends the
end-of-text token after the response; generation stops there (and at STOP, as a safety net).
"""

from __future__ import annotations

INSTRUCTION = "### Instruction:\n"
INPUT = "### Input:\n"
RESPONSE = "### Response:\n"
STOP = ("### Instruction:", "### Response:", "### Input:")


def format_prompt(instruction: str, input: str = "") -> str:
    """The prompt part: everything before the response."""
    text = f"{INSTRUCTION}{instruction.strip()}\n\n"
    if input and input.strip():
        text += f"{INPUT}{input.strip()}\n\n"
    return text + RESPONSE


def format_exchange(instruction: str, response: str) -> str:
    """One earlier exchange of a conversation, as the prompt carries it before the new question."""
    return format_prompt(instruction) + response.strip() + "\n\n"


def format_example(instruction: str, input: str, output: str,
                   history: tuple[tuple[str, str], ...] = ()) -> tuple[str, str]:
    """(prompt, response) for one training example; loss is taken on the response only.
    `history` holds earlier (instruction, response) exchanges, oldest first, which the prompt
    carries before the new instruction as chat does (engine.assistant.build_prompt)."""
    prefix = "".join(format_exchange(q, a) for q, a in history)
    return prefix + format_prompt(instruction, input), output.strip()
