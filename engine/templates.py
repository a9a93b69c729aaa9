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


def _jinja(text: str) -> str:
    """text as a single-quoted Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


# The same layout as a Jinja chat template (tokenizer_config.json "chat_template"), so serving
# engines that read it (vLLM's /v1/chat/completions, transformers' apply_chat_template, llama.cpp
# after convert_hf_to_gguf) build the prompts our models were tuned on. It renders what
# engine.assistant.build_prompt does for a conversation that fits the window: system messages
# first, then one block per earlier exchange (consecutive user messages are one question; a
# question whose answer is empty is left out), then the latest question and, with
# add_generation_prompt, the response header. What only our server adds is not in it: trimming
# to the window, the Python assistant's filter and refusals, documentation passages.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(head='', body='', question='') -%}"
    "{%- for message in messages -%}"
    "{%- set text = message['content'] | trim -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if text -%}{%- set ns.head = ns.head + ('\\n\\n' if ns.head else '') + text -%}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{%- if text -%}"
    "{%- set ns.question = ns.question + ('\\n\\n' if ns.question else '') + text -%}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- if ns.question and text -%}"
    f"{{%- set ns.body = ns.body + {_jinja(INSTRUCTION)} + ns.question + '\\n\\n' + "
    f"{_jinja(RESPONSE)} + text + '\\n\\n' -%}}"
    "{%- endif -%}"
    "{%- set ns.question = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- (ns.head + '\\n\\n' if ns.head else '') + ns.body -}}"
    "{%- if ns.question -%}"
    f"{{{{- {_jinja(INSTRUCTION)} + ns.question + '\\n\\n' -}}}}"
    f"{{%- if add_generation_prompt -%}}{{{{- {_jinja(RESPONSE)} -}}}}{{%- endif -%}}"
    "{%- endif -%}"
)
