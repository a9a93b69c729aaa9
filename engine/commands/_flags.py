"""The flags that generate, chat and eval-assistant share (sampling, device, grounding) (not a command:
names starting with "_" are skipped when commands are collected)."""

from __future__ import annotations

import argparse


def add_sampling_arguments(p: argparse.ArgumentParser, defaults=None) -> None:
    from engine.sampling import SamplingParams

    d = defaults or SamplingParams()
    p.add_argument("--temperature", "-t", type=float, default=d.temperature,
                   help=f"softmax temperature; 0 = greedy (always the most likely token) "
                        f"(default {d.temperature})")
    p.add_argument("--top-k", type=int, default=d.top_k,
                   help=f"keep only the k most likely tokens; 0 = off (default {d.top_k})")
    p.add_argument("--top-p", type=float, default=d.top_p,
                   help=f"nucleus sampling: keep the smallest set of tokens whose probability "
                        f"reaches p, in (0, 1]; 1 = off (default {d.top_p})")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty,
                   help=f"CTRL penalty for tokens already in the context (> 1 discourages "
                        f"repeats); 1 = off (default {d.repetition_penalty})")
    p.add_argument("--repetition-window", type=int, default=d.repetition_window,
                   help=f"how many recent tokens the repetition penalty looks at; 0 = all "
                        f"(default {d.repetition_window})")
    p.add_argument("--max-new-tokens", "-n", type=int, default=d.max_new_tokens,
                   help=f"stop after this many new tokens (default {d.max_new_tokens})")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed: the same seed, model and settings give the same text "
                        "(default: a fresh random seed)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop before this text (not printed); repeat the flag for several")


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    from engine.precision import CHOICES

    p.add_argument("--device", default="auto",
                   help="where to run: auto (CUDA, then Apple MPS, then CPU), cpu, cuda, "
                        "cuda:N or mps (default auto)")
    p.add_argument("--precision", default="auto", choices=CHOICES,
                   help="number format for inference: fp32 (exact), bf16 (bfloat16), int8 "
                        "(int8 weights, CPU only), or auto: the fastest that holds quality on "
                        "the device (int8 on a CPU, bf16 on a CUDA GPU, else fp32) (default auto)")


def sampling_params(args: argparse.Namespace):
    """SamplingParams from the flags (validated: a bad value is a ValueError naming it)."""
    from engine.sampling import SamplingParams

    return SamplingParams(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, repetition_window=args.repetition_window,
        max_new_tokens=args.max_new_tokens, seed=args.seed, stop=tuple(args.stop))


def add_grounding_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grounding", default="auto", choices=("auto", "python-docs", "none"),
                   help="python mode: python-docs puts documentation passages in the prompt, none "
                        "answers without them, auto does what the model was trained for (its "
                        "assistant.json; the bundled python-assistant: python-docs)")


def load(args: argparse.Namespace):
    """The --model checkpoint on the --device at the --precision (with --grounding applied)."""
    from engine.device import pick_device
    from engine.loading import load_model

    ckpt = load_model(args.model, device=pick_device(args.device), precision=args.precision)
    grounding = getattr(args, "grounding", "auto")
    if grounding != "auto":
        ckpt.grounding = "" if grounding == "none" else grounding
    return ckpt
