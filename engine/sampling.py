"""Sampling: validated parameters and logits processors applied in a fixed, documented order.

Order (the same as transformers' generate()): repetition penalty, temperature, top-k, top-p,
then a draw from the softmax (or argmax when temperature is 0). Each processor is a small object
with one job that maps (logits, recent token ids) -> logits, so the sampling explorer can show
the distribution after every stage. All of them keep at least one token.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Sequence

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")
# Smallest temperature used in arithmetic: float32 turns smaller ones into 0 (then 0/0 = NaN). At
# this temperature any logit gap float32 can represent already sends the runner-up to -inf.
MIN_TEMPERATURE = 1e-30


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy (argmax)
    top_k: int = 50  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off; CTRL rule
    repetition_window: int = 1024  # how many recent tokens the penalty looks at; 0 = all
    max_new_tokens: int = 128
    seed: int | None = None  # same seed, same text
    stop: tuple[str, ...] = ()  # generation ends before any of these strings; not emitted

    def __post_init__(self) -> None:
        # Coerce list -> tuple so the dataclass stays hashable and immutable.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, (list, tuple)):
            object.__setattr__(self, "stop", tuple(self.stop))
        self.validate()

    def validate(self) -> None:
        _number("temperature", self.temperature)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        _integer("top_k", self.top_k)
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 means off), got {self.top_k}")
        _number("top_p", self.top_p)
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        _number("repetition_penalty", self.repetition_penalty)
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1.0 means off), got {self.repetition_penalty}")
        _integer("repetition_window", self.repetition_window)
        if self.repetition_window < 0:
            raise ValueError(f"repetition_window must be >= 0 (0 means all tokens), got {self.repetition_window}")
        _integer("max_new_tokens", self.max_new_tokens)
        if not 1 <= self.max_new_tokens <= 100_000:
            raise ValueError(f"max_new_tokens must be between 1 and 100000, got {self.max_new_tokens}")
        if self.seed is not None:
            _integer("seed", self.seed)
            if not 0 <= self.seed < 2**63:
                raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "SamplingParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sampling parameter(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> "SamplingParams":
        return replace(self, **changes)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _integer(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Processors. Each takes logits of shape (V,) or (B, V) and the token ids the penalty may see.


class RepetitionPenalty:
    """CTRL (Keskar et al. 2019): divide positive logits of seen tokens, multiply negative ones."""

    def __init__(self, penalty: float, window: int = 0) -> None:
        self.penalty = penalty
        self.window = window

    def __call__(self, logits: torch.Tensor, history: torch.Tensor,
                 in_place: bool = False) -> torch.Tensor:
        """The penalised logits; in_place overwrites `logits` (the same values, no copy)."""
        if self.penalty == 1.0 or history.numel() == 0:
            return logits
        if self.window:
            history = history[..., -self.window:]
        seen = torch.gather(logits, -1, history)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return logits.scatter_(-1, history, seen) if in_place else logits.scatter(-1, history, seen)


class Temperature:
    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.temperature in (0.0, 1.0):
            return logits
        scaled = logits / self.temperature
        if torch.isposinf(scaled).any() or torch.isnan(scaled).any():
            # A tiny temperature overflowed the top logits to +inf (softmax would give NaN), or
            # is below float32's range and became 0. Shift by the max first (the same
            # distribution; the top logit becomes 0) and divide by a temperature clamped to
            # float32's range: the others go to -inf instead. No float64, which MPS lacks.
            shifted = logits - logits.max(dim=-1, keepdim=True).values
            scaled = shifted / max(self.temperature, MIN_TEMPERATURE)
        return scaled


class TopK:
    """Keep the k highest logits (and any that tie with the k-th, as transformers does)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.k <= 0 or self.k >= logits.size(-1):
            return logits
        kth = torch.topk(logits, self.k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, NEG_INF)


class TopP:
    """Nucleus sampling: keep the smallest set of top tokens whose probability reaches p."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - self.p)
        remove[..., -1:] = False  # always keep the most likely token
        remove = remove.scatter(-1, order, remove)
        return logits.masked_fill(remove, NEG_INF)


def processors(params: SamplingParams) -> list[tuple[str, object]]:
    """The processors for these parameters, named, in the order they are applied."""
    return [
        ("repetition penalty", RepetitionPenalty(params.repetition_penalty, params.repetition_window)),
        ("temperature", Temperature(params.temperature)),
        ("top-k", TopK(params.top_k)),
        ("top-p", TopP(params.top_p)),
    ]


# ---------------------------------------------------------------------------------------------
# Drawing the next token.


class Sampler:
    """Picks next tokens for one generation: the processors plus a seeded random generator."""

    def __init__(self, params: SamplingParams, device: torch.device | str = "cpu",
                 constraint=None) -> None:
        self.params = params
        # Optional: a callable that masks logits (V,) -> (V,) and observes each token picked,
        # such as engine.inline_code.InlineCodeConstraint for grounded answers.
        self.constraint = constraint
        self.penalty = RepetitionPenalty(params.repetition_penalty, params.repetition_window)
        self.generator = torch.Generator(device=device)
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor, history: torch.Tensor) -> int:
        """logits: (V,) for the next position; history: 1-D tensor of token ids in context."""
        if self.constraint is None:
            return self._pick(logits, history)
        token = self._pick(self.constraint(logits.float()), history)
        self.constraint.observe(token)
        return token

    def _pick(self, logits: torch.Tensor, history: torch.Tensor) -> int:
        p = self.params
        logits = self.penalty(logits.float(), history)
        if p.greedy:
            return int(torch.argmax(logits))
        if self.top_k_path(logits.size(-1)):
            # Fast path: after top-k only k candidates remain, so apply temperature and top-p
            # and draw on those k values instead of scaling and sorting the whole vocabulary.
            # Temperature (> 0) keeps the order, so taking the top k first picks the same tokens.
            # Identical results, unless more than k logits tie at the k-th value: then fall
            # back to the full-vocabulary path, which keeps every tied token as transformers does.
            # One more than k tells whether the k-th value is tied with the rest.
            values, indices = torch.topk(logits, p.top_k + 1)  # sorted, largest first
            if bool(values[-1] < values[-2]):
                probs = top_probs(values, p.temperature, p.top_p)
                return int(indices[int(torch.multinomial(probs, 1, generator=self.generator))])
        elif p.top_k == 0 and p.top_p < 1.0:
            return self._nucleus(logits)
        return self._draw_full(logits, history)

    def top_k_path(self, vocab_size: int) -> bool:
        """Whether a draw starts from the top k+1 logits (which draw_rows takes for many rows
        at once)."""
        return not self.params.greedy and 0 < self.params.top_k < vocab_size

    def _draw_full(self, logits: torch.Tensor, history: torch.Tensor) -> int:
        """Temperature, top-k, top-p over the whole vocabulary of penalised logits, and a draw."""
        p = self.params
        logits = Temperature(p.temperature)(logits, history)
        logits = TopP(p.top_p)(TopK(p.top_k)(logits, history), history)
        return int(torch.multinomial(logits.softmax(-1), 1, generator=self.generator))

    def _nucleus(self, logits: torch.Tensor) -> int:
        """Top-p alone, without sorting the vocabulary (4 ms for GPT-2's 50257 logits on a CPU,
        about 0.1 ms for a top 64). The nucleus is the smallest set of top tokens whose mass
        reaches p, so once the k largest probabilities add up to p, every token of it is among
        them: take the top 64, 256, ... until they do, then apply TopP's rule (a token stays while
        the mass before it is below p) to those, already sorted, and draw."""
        p = self.params
        probs = ((logits - logits.max()) / max(p.temperature, MIN_TEMPERATURE)).softmax(-1)
        k = 64
        while True:
            k = min(k, probs.size(-1))
            values, indices = torch.topk(probs, k)  # sorted, largest first
            if k == probs.size(-1) or float(values.sum()) >= p.top_p:
                break
            k *= 4
        values = values * ((values.cumsum(-1) - values) < p.top_p)
        return int(indices[int(torch.multinomial(values, 1, generator=self.generator))])


def top_probs(values: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Unnormalised draw weights for the top k of the top k+1 penalised logits (sorted, largest
    first, along the last dim), after temperature and top-p.

    Temperature: shift by the max first (the same distribution, no overflow at tiny
    temperatures) and divide by the temperature clamped to float32's range (below it every gap
    is -inf anyway; no float64, which MPS lacks). Then nucleus without a sort, since the values
    are sorted already: a token stays while the mass before it is below p (TopP's rule, the
    first always stays). multinomial takes the unnormalised remainder."""
    probs = ((values[..., :-1] - values[..., :1]) / max(temperature, MIN_TEMPERATURE)).softmax(-1)
    if top_p < 1.0:
        probs = probs * ((probs.cumsum(-1) - probs) < top_p)
    return probs


def top_rows(logits: torch.Tensor, n: int, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(logits, n) for logits (B, V), in about half its time for GPT-2's vocabulary
    on a CPU: the n largest values of a row lie in the n blocks (of `block` logits) with the
    largest maxima, so topk runs on those n * block candidates instead of all V. A row where two
    of the n values are equal (then which tied token comes first could differ) uses torch.topk."""
    B, V = logits.shape
    blocks = -(-V // block)
    if blocks < 4 * n:  # too few blocks to gain anything
        return torch.topk(logits, n)
    padded = F.pad(logits, (0, blocks * block - V), value=NEG_INF).view(B, blocks, block)
    chosen = torch.topk(padded.amax(-1), n).indices.sort(-1).values  # (B, n), in vocab order
    candidates = padded.gather(1, chosen.unsqueeze(-1).expand(B, n, block)).view(B, n * block)
    values, at = torch.topk(candidates, n)
    index = chosen.gather(1, at // block) * block + at % block
    tied = (values[:, 1:] == values[:, :-1]).any(-1)
    if bool(tied.any()):  # only the rows with ties go the long way
        values[tied], index[tied] = torch.topk(logits[tied], n)
    return values, index


def draw_rows(samplers: Sequence[Sampler], logits: torch.Tensor,
              histories: Sequence[torch.Tensor]) -> list[int]:
    """The next token of each row: samplers[i](logits[i], histories[i]) for every i, the same
    tokens from the same random draws, with the work that rows share done once (the batching
    scheduler, engine.serving). Rows on the top-k path (no constraint) with the same top-k,
    temperature and top-p take one topk and one top_probs together: on a CPU, topk over
    GPT-2's 50257 logits is most of a draw. Each row still draws from its own generator.
    logits: (B, V), overwritten (the penalty is applied in place). Returns B token ids."""
    tokens: list[int] = [0] * len(samplers)
    groups: dict[tuple[int, float, float], list[int]] = {}
    for i, s in enumerate(samplers):
        if s.constraint is None and s.top_k_path(logits.size(-1)):
            groups.setdefault((s.params.top_k, s.params.temperature, s.params.top_p), []).append(i)
        else:
            tokens[i] = s(logits[i], histories[i])
    for (k, temperature, top_p), rows in groups.items():
        batch = logits.float() if len(rows) == len(samplers) else logits[rows].float()
        for j, i in enumerate(rows):
            samplers[i].penalty(batch[j], histories[i], in_place=True)
        values, indices = top_rows(batch, k + 1)  # per row: sorted, largest first
        untied = (values[:, -1] < values[:, -2]).tolist()
        probs = top_probs(values, temperature, top_p)
        ids = indices.tolist()
        for j, i in enumerate(rows):
            s = samplers[i]
            if untied[j]:
                tokens[i] = ids[j][int(torch.multinomial(probs[j], 1, generator=s.generator))]
            else:  # more than k logits tie at the k-th value: as Sampler does
                tokens[i] = s._draw_full(batch[j], histories[i])
    return tokens


def explain(logits: torch.Tensor, history: Sequence[int] | torch.Tensor, params: SamplingParams,
            top: int = 10) -> dict:
    """What each processor does to the next-token distribution (for the sampling explorer).

    Returns {"token_ids": [...], "stages": [{"name": ..., "probs": [...]}, ...]} for `top`
    tokens: the most likely of the raw distribution, with the least likely of them swapped for
    any that the final distribution favours more (so exactly `top`, the number a UI asked for);
    probabilities are after each stage (temperature 0 shows the greedy choice as 1.0).
    """
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    logits = logits.detach().float().reshape(-1)
    history = torch.as_tensor(list(history) if not torch.is_tensor(history) else history,
                              dtype=torch.long).reshape(-1)
    stages = [("raw", logits)]
    current = logits
    for name, proc in processors(params):
        if params.greedy and name != "repetition penalty":
            continue
        current = proc(current, history)
        stages.append((name, current))
    if params.greedy:
        greedy = torch.full_like(current, NEG_INF)
        greedy[int(torch.argmax(current))] = 0.0
        stages.append(("greedy", greedy))
    probs = [(name, torch.softmax(l, dim=-1)) for name, l in stages]
    final = probs[-1][1]
    k = min(top, logits.numel())
    ids = torch.topk(probs[0][1], k).indices.tolist()
    favoured = [i for i in torch.topk(final, k).indices.tolist() if float(final[i]) > 0]
    extra = [i for i in favoured if i not in ids]
    if extra:  # make room: drop the least likely raw candidates that sampling does not favour
        keep = set(favoured)
        drop = [i for i in reversed(ids) if i not in keep][:len(extra)]
        ids = [i for i in ids if i not in drop] + extra
    return {
        "token_ids": ids,
        "stages": [{"name": name, "probs": [float(p[i]) for i in ids]} for name, p in probs],
    }
