"""The GPT-2 model: token + position embeddings, pre-LN transformer blocks, tied LM head.

Parameter names follow Hugging Face's GPT2LMHeadModel (transformer.h.0.attn.c_attn, ...), so
converting weights is a matter of transposes (see hub.py), not renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to `max_len`.

    Kept outside the model (as in nanochat) so the model stays a pure function of its inputs and
    one model can serve many concurrent generations, each with its own cache.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        if max_len > config.block_size:
            raise ValueError(f"cache length {max_len} exceeds the context window {config.block_size}")
        shape = (batch_size, config.n_head, max_len, config.head_dim)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len
        self.pos = 0  # number of positions filled

    def reset(self) -> None:
        self.pos = 0


class SlotKVCache:
    """Keys and values for many generations decoded together (engine.serving): one row ("slot")
    per generation, each at its own position, padded to a common length.

    A decode step feeds one new token per row for rows 0..n-1; row i's token sits at position
    `lengths[i]`. Rows attend only to their own filled positions (a mask hides the padding),
    so a short prompt and a long one can share a step. The tensors start zeroed: the
    padding is never attended to, but it must be finite (0 x NaN would still be NaN).

    Layout (slots, max_len, n_head, head_dim), unlike KVCache's (batch, n_head, len, head_dim):
    a row's first n positions are one contiguous block, which the batched attention below
    reads faster, and a step's keys are stored in c_attn's output order without a permute.
    """

    def __init__(self, config: GPTConfig, slots: int, max_len: int,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        if max_len > config.block_size:
            raise ValueError(f"cache length {max_len} exceeds the context window {config.block_size}")
        shape = (slots, max_len, config.n_head, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.slots, self.max_len = slots, max_len
        self.lengths = [0] * slots  # positions filled in each row
        self._step: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self._scratch: torch.Tensor | None = None  # products of the batched attention, reused

    def put(self, layer: int, rows: slice, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys and values in KVCache's layout, (len(rows), n_head, n, head_dim), at
        positions 0..n-1 of `rows` (a prefill's; the caller sets `lengths`)."""
        n = k.size(2)
        self.k[layer][rows, :n] = k.transpose(1, 2)
        self.v[layer][rows, :n] = v.transpose(1, 2)

    def copy_row(self, src: int, dst: int, into: "SlotKVCache | None" = None) -> None:
        """Row src's filled positions (and its length) to row dst of `into` (default: this
        cache; another one when the cache grows)."""
        into = into or self
        n = self.lengths[src]
        for layer in range(len(self.k)):
            into.k[layer][dst, :n] = self.k[layer][src, :n]
            into.v[layer][dst, :n] = self.v[layer][src, :n]
        into.lengths[dst] = n

    def reorder(self, order: list[int]) -> None:
        """Rows order[0], order[1], ... become rows 0, 1, ..."""
        for layer in range(len(self.k)):
            self.k[layer][:len(order)] = self.k[layer][order]
            self.v[layer][:len(order)] = self.v[layer][order]
        self.lengths[:len(order)] = [self.lengths[i] for i in order]

    def begin_step(self, rows: int, device: torch.device) -> torch.Tensor:
        """Positions of the next token of rows 0..rows-1 (for the position embedding); fixes
        where this step's keys and values go and the attention mask, for all its layers."""
        lengths = self.lengths[:rows]
        if max(lengths) >= self.max_len:
            raise ValueError(f"a row of the cache is full ({self.max_len} positions)")
        pos = torch.tensor(lengths, dtype=torch.long, device=device)
        span = max(lengths) + 1
        # Row i's new keys go to position lengths[i]: flat indices into a layer's
        # (slots * max_len, n_head, head_dim) view.
        where = torch.arange(rows, device=device) * self.max_len + pos
        # Additive mask (what SDPA makes of a boolean one, made once per step, not per layer),
        # (rows, span, 1): 0 on each row's filled positions and its new one, -inf after them.
        mask = torch.zeros(rows, span, 1, device=device, dtype=self.k[0].dtype).masked_fill_(
            torch.arange(span, device=device).view(1, span, 1) > pos.view(-1, 1, 1), float("-inf"))
        self._step = (where, mask, span)
        return pos

    def end_step(self, rows: int) -> None:
        for i in range(rows):
            self.lengths[i] += 1
        self._step = None

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store this step's keys and values (B, n_head, head_dim) at each row's position;
        attention of q (the same shape) over each row's filled positions. Returns (B, n_head,
        head_dim)."""
        where, mask, span = self._step
        B, H, D = q.shape
        self.k[layer].view(-1, H, D).index_copy_(0, where, k)
        self.v[layer].view(-1, H, D).index_copy_(0, where, v)
        keys = self.k[layer][:B, :span]  # (B, span, H, D)
        values = self.v[layer][:B, :span]
        if q.device.type != "cpu" or (B == 1 and q.dtype == torch.float32):
            y = F.scaled_dot_product_attention(q.unsqueeze(2), keys.transpose(1, 2), values.transpose(1, 2),
                                               attn_mask=mask.view(B, 1, 1, span))
            return y.squeeze(2)
        # On the CPU (several rows, or bfloat16): a single query per row and head is a dot
        # product with each key, so multiply and sum over contiguous blocks, through a reused
        # buffer, summing in float32. One thread reads the cache about 1.5x as fast this way as
        # SDPA's kernels per (row, head) do; the results differ from SDPA's by rounding
        # (docs/engine.md, "8 concurrent requests against 1").
        if self._scratch is None:
            self._scratch = torch.empty_like(self.k[layer]).view(-1)
        products = self._scratch[:keys.numel()].view(keys.shape)
        scores = torch.mul(keys, q.unsqueeze(1), out=products).sum(-1, dtype=torch.float32)
        weights = torch.softmax(scores.mul_(D ** -0.5).add_(mask), dim=1).to(q.dtype)  # (B, span, H)
        y = torch.mul(values, weights.unsqueeze(-1), out=products).sum(1, dtype=torch.float32)
        return y.to(q.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, self.head_dim)
        if isinstance(cache, SlotKVCache):  # many generations, one token each (engine.serving)
            y = cache.attend(layer, *qkv[:, 0].unbind(1))  # q, k, v: (B, n_head, head_dim)
            return self.c_proj(y.reshape(B, T, C))
        # (B, T, 3C) -> q, k, v, each (B, n_head, T, head_dim): one view and one permute (views
        # of c_attn's output, as split + three view/transpose pairs would give, in fewer calls).
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        mask = None
        is_causal = T > 1
        if cache is not None:
            start = cache.pos
            cache.k[layer][:, :, start:start + T] = k
            cache.v[layer][:, :, start:start + T] = v
            k = cache.k[layer][:, :, :start + T]
            v = cache.v[layer][:, :, :start + T]
            if start > 0 and T > 1:
                # New queries attend to every cached position and causally among themselves;
                # SDPA's is_causal aligns the mask to the top-left, so build it explicitly.
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
                is_causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return self.resid_dropout(y) if self.training and self.dropout else y


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2's "gelu_new" is the tanh approximation of GELU (applied with F.gelu in forward).
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Dropout is skipped outright when it does nothing: decoding calls this once per layer
        # per token, and each module call costs a few microseconds of Python.
        y = self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        return self.dropout(y) if self.training and self.dropout.p else y


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2 scales the init of the projections that write into the residual stream by
        # 1/sqrt(2 * n_layer): each block adds two of them, and without the scaling the variance
        # of the residual stream grows with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (the tied head is counted once). non_embedding drops position
        embeddings too, the convention used for scaling-law and MFU figures."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The trunk: embeddings, every block, the final LayerNorm. idx: (B, T) token ids;
        returns (B, T, n_embd) hidden states, ready for the LM head. forward() and the training
        loss (engine.chunked_loss) both start here, so they cannot drift apart.

        With a cache, idx holds only the new tokens; they sit at positions cache.pos onwards,
        and cache.pos advances by T.
        """
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds the context window of {self.config.block_size}"
            )
        # Positions start..start+T-1 are consecutive: a slice of the table, no index lookup.
        pos_emb = self.transformer.wpe.weight[start:start + T]
        x = self.transformer.wte(idx) + pos_emb
        # The dropout module's own p, not config.dropout: a run that fine-tunes a model sets the
        # modules' dropout (engine.train.set_dropout) and leaves the model's config alone.
        if self.training and self.transformer.drop.p:
            x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def decode_rows(self, idx: torch.Tensor, cache: SlotKVCache) -> torch.Tensor:
        """One decode step for rows 0..B-1 of a SlotKVCache, each at its own position.
        idx: (B,) the rows' new tokens; returns (B, V) logits for the token after each."""
        B = idx.size(0)
        pos = cache.begin_step(B, idx.device)
        x = self.transformer.wte(idx.view(B, 1)) + self.transformer.wpe(pos).view(B, 1, -1)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        cache.end_step(B)
        return self.lm_head(self.transformer.ln_f(x))[:, 0]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False):
        """idx: (B, T) token ids. Returns logits (B, T, V), or (B, 1, V) with last_only, and the
        mean cross-entropy loss when targets are given (positions with -100 are ignored).

        With a cache, idx holds only the new tokens; they sit at positions cache.pos onwards.
        """
        x = self.hidden(idx, cache)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100)
            return logits, loss
        if last_only:
            x = x[:, -1:, :]
        return self.lm_head(x), None
