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


def format_example(instruction: str, input: str, output: str) -> tuple[str, str]:
    """(prompt, response) for one training example; loss is taken on the response only."""
    return format_prompt(instruction, input), output.strip()
