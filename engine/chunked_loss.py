"""The training loss on CPUs: the GPT trunk, then the LM head and cross-entropy a chunk of rows
at a time, so the (tokens x vocabulary) logits are never held whole.

    module = training_module(model, device)   # ChunkedLossGPT on a CPU, the GPT itself elsewhere
    _, loss = module(x, y)                    # what GPT.forward(x, y) computes, same gradients
"""

from __future__ import annotations

import torch

from .model import GPT


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits = h @ W^T against targets (-100 ignored), computed a chunk of
    rows at a time, with the gradients worked out in the forward pass (the loss is the last node
    of the graph). The (tokens x vocabulary) logits and their gradient are never materialised
    whole: on a CPU, writing, reading and zero-filling those arrays (400 MB per step for GPT-2's
    vocabulary at batch 8 x 256) costs as much as a third of the step. Same FLOPs as F.linear +
    F.cross_entropy."""

    @staticmethod
    def forward(ctx, h, weight, targets, chunk: int):
        n = targets.ne(-100).sum().clamp(min=1)
        grad_h = torch.empty_like(h)
        # A frozen head (LoRA: the tied embedding does not train) needs no weight gradient.
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        total = h.new_zeros((), dtype=torch.float32)
        for s in range(0, h.size(0), chunk):
            hc, tc = h[s:s + chunk], targets[s:s + chunk]
            valid = tc.ne(-100)
            tgt = tc.clamp(min=0)
            logits = (hc @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, tgt[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            probs[torch.arange(len(tgt), device=h.device), tgt] -= 1.0
            probs *= valid[:, None]
            g = probs.to(h.dtype)
            grad_h[s:s + chunk] = g @ weight
            if grad_w is not None:
                grad_w.addmm_(g.t(), hc)
        ctx.save_for_backward(grad_h, grad_w, n)
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, n = ctx.saved_tensors
        scale = grad_out / n
        return grad_h * scale, None if grad_w is None else grad_w * scale, None, None


class ChunkedLossGPT(torch.nn.Module):
    """Training view of a GPT for CPUs: the model's trunk (GPT.hidden), then _LinearCrossEntropy
    instead of full logits + cross_entropy. forward(idx, targets) -> (None, loss), like GPT's
    with targets. (GPUs use GPT.forward: fused kernels and autocast serve them better.)"""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model
        vocab = model.config.vocab_size
        self.chunk = max(64, (1 << 23) // vocab)  # ~32 MB of float32 logits per chunk

    def forward(self, idx: torch.Tensor, targets: torch.Tensor):
        h = self.model.hidden(idx)
        h = h.reshape(-1, h.size(-1))
        return None, _LinearCrossEntropy.apply(h, self.model.lm_head.weight, targets.reshape(-1),
                                               self.chunk)


def training_module(model: GPT, device: torch.device) -> torch.nn.Module:
    """What the loop calls as module(x, y) -> (_, loss): the chunked loss on CPUs, else the GPT."""
    return ChunkedLossGPT(model) if device.type == "cpu" else model
