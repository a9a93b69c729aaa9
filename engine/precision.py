"""Inference precision: which number format a loaded model computes in, chosen in one place.

    precision = resolve("auto", device)      # "fp32" | "bf16" | "int8"
    model = apply(model, precision)          # in place; returns the model

- fp32: the exact path. Training, the parity tests against transformers and `explain` use it,
  and `engine.loading.load_model` gives it unless asked for another.
- bf16: the whole model in bfloat16 (weights, activations, KV cache). Half the bytes per token
  of fp32; the natural choice on a GPU.
- int8: weight-only int8 for every linear layer (the four per block and the LM head), one scale
  per output row; embeddings, LayerNorms, attention and the residual stream stay float32. On the
  CPU it runs on FBGEMM's prepacked int8 kernels, which also quantize each layer's input to int8
  on the fly (one scale per call); without FBGEMM (e.g. ARM CPUs) it falls back to
  `torch._weight_int8pack_mm`, which multiplies bfloat16 inputs by the int8 weights. A quarter of
  fp32's weight bytes: decoding at batch 1 reads every weight once per token, so fewer bytes is
  faster. CPU only.
- auto: the fastest of these that holds quality, by device (`AUTO`). The choices come from
  `python -m benchmarks.decode` on this project's machine (docs/engine.md, "Speed"), and the
  quality gate (perplexity of each bundled model on its held-out text within 0.5% of fp32) is
  checked by that benchmark and by tests/test_precision.py.

Seeds: the same seed gives the same text at a given precision; different precisions may pick
different tokens once their logits differ in a close call.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

CHOICES = ("auto", "fp32", "bf16", "int8")
# auto, by device type: int8 is about twice fp32's decode speed on the CPU (FBGEMM); on a GPU
# bfloat16 halves the bytes with no kernel of ours; MPS keeps float32 (bfloat16 needs macOS 14).
AUTO = {"cpu": "int8", "cuda": "bf16", "mps": "fp32"}
GATE = 0.005  # the largest relative change in held-out perplexity a precision may cause


def check(name: str) -> str:
    """name, or a ValueError that lists the choices."""
    if name not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {name!r}")
    return name


def resolve(name: str, device: torch.device | str = "cpu") -> str:
    """The concrete precision ("fp32", "bf16" or "int8") that `name` means on `device`."""
    check(name)
    kind = torch.device(device).type
    if name == "auto":
        name = AUTO.get(kind, "fp32")
        if name == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
            name = "fp32"
    if name == "int8" and kind != "cpu":
        raise ValueError(f"precision 'int8' runs on the CPU only, not on {kind}; use bf16 or fp32 there")
    return name


def apply(model: nn.Module, precision: str) -> nn.Module:
    """Convert a float32 GPT for inference at `precision` (concrete, or auto on its device), in
    place, and put it in eval mode. Not for training: int8 layers have no gradients."""
    param = next(model.parameters())
    precision = resolve(precision, param.device)
    if param.dtype != torch.float32 and precision != "fp32":
        raise ValueError(f"precision {precision!r} starts from float32 weights, got {param.dtype}")
    model.eval()
    if precision == "bf16":
        model.to(torch.bfloat16)
    elif precision == "int8":
        _replace_linears(model, lambda lin: Int8Linear(lin))
    model.precision = precision
    return model


def precision_of(model: nn.Module) -> str:
    """What apply() made of the model ("fp32" for one it never saw)."""
    return getattr(model, "precision", "fp32")


def _replace_linears(module: nn.Module, make) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child))
        else:
            _replace_linears(child, make)


def fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines


@functools.lru_cache(maxsize=1)
def has_vnni() -> bool:
    """Whether the CPU has VNNI (int8 dot products into int32). Without it FBGEMM multiplies
    pairs into saturating int16 sums, so its inputs must use 7 bits (reduce_range); with it, 8
    bits halve the input rounding error. Read from /proc/cpuinfo (Linux); elsewhere False."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8, one float scale per output row (symmetric).

    kernel "fbgemm": FBGEMM's dynamic int8 linear (input quantized per call, int32 accumulation);
    "int8pack": torch._weight_int8pack_mm on bfloat16 inputs. Inputs and outputs are float32.
    reduce_range (fbgemm): quantize inputs to 7 bits; default: only on CPUs without VNNI. With
    7 bits the result is the same on every x86 CPU, VNNI or not (no int16 sum can saturate).
    """

    def __init__(self, linear: nn.Linear, kernel: str | None = None, reduce_range: bool | None = None) -> None:
        super().__init__()
        kernel = kernel or ("fbgemm" if fbgemm_available() else "int8pack")
        if kernel not in ("fbgemm", "int8pack"):
            raise ValueError(f"kernel must be fbgemm or int8pack, got {kernel!r}")
        self.kernel = kernel
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        if kernel == "fbgemm":
            with warnings.catch_warnings():
                # Quantized tensors are marked deprecated in torch 2.13; FBGEMM's prepacked
                # kernels still need one to pack from, and nothing else here is as fast.
                warnings.simplefilter("ignore")
                qw = torch._make_per_channel_quantized_tensor(
                    q, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
                self._packed = torch.ops.quantized.linear_prepack(qw, bias)
            self._reduce_range = not has_vnni() if reduce_range is None else reduce_range
        else:
            self.register_buffer("weight", q)
            self.register_buffer("scale", scale.to(torch.bfloat16))
            self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "fbgemm":
            return torch.ops.quantized.linear_dynamic(x, self._packed, self._reduce_range)
        shape = x.shape
        y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.weight, self.scale)
        y = y.view(*shape[:-1], self.out_features).float()
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


def quality_gate(spec: str, data_spec: str, precision: str, max_sequences: int = 32,
                 cache_dir: str | None = None) -> dict:
    """Perplexity of model `spec` on the held-out part of `data_spec` (the "val" split training
    uses, 10%) in float32 and at `precision`, on the CPU. Returns {"fp32_ppl", "ppl",
    "change" (relative), "passed" (|change| <= GATE)}. Uses at most max_sequences windows of
    the model's context length."""
    from pathlib import Path

    from . import data as D
    from .evaluate import loss_sums, perplexity, token_byte_counts
    from .loading import load_model

    ckpt = load_model(spec, device="cpu")
    model, tok = ckpt.model.eval(), ckpt.tokenizer
    block = model.config.block_size
    data = D.prepare(D.open_source(data_spec), tok, Path(cache_dir) if cache_dir else D.DEFAULT_CACHE,
                     0.1, None, block)
    batches = D.Batches(data, block, 0, "val")
    n = min(len(batches), max_sequences)
    if n == 0:
        raise ValueError(f"{data_spec}: no held-out {block}-token sequence to measure perplexity on")
    counts = token_byte_counts(tok)
    base = perplexity(loss_sums(model, batches, n, 8, torch.device("cpu"), counts).loss)
    with torch.inference_mode():
        ppl = perplexity(loss_sums(apply(model, precision), batches, n, 8, torch.device("cpu"), counts).loss)
    change = ppl / base - 1
    return {"fp32_ppl": base, "ppl": ppl, "change": change, "passed": abs(change) <= GATE}
