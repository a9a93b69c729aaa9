"""Hugging Face interop: GPT-2 weights in (hub id or local transformers folder), transformers out.

Our parameter names are GPT2LMHeadModel's, so converting is a matter of transposes. The one
difference: transformers' GPT-2 uses `Conv1D` layers, which store weights as [in, out], while our
`nn.Linear` layers store [out, in]. The four Conv1D weights of each block (attn.c_attn,
attn.c_proj, mlp.c_fc, mlp.c_proj) are transposed on the way in and again on the way out;
embeddings, LayerNorms and biases are copied as they are.

Nothing is unpickled: weights come from safetensors, or from pytorch_model.bin through
torch.load(weights_only=True), which refuses anything but tensors and plain containers.
This module does not import transformers; it reads and writes the files directly.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from .checkpoint import Checkpoint
from .config import GPT2_VOCAB_SIZE, GPTConfig
from .errors import ModelLoadError
from .fileio import atomic_directory, atomic_write_json, save_safetensors
from .model import GPT
from .templates import CHAT_TEMPLATE
from .tokenizer import EOT, BPETokenizer, GPT2Tokenizer, Tokenizer

# Weights stored as [in, out] by transformers' Conv1D: transposed in both directions.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers some older GPT-2 files carry (the causal mask); not weights, so skipped.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json")
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _is_conv1d(name: str) -> bool:
    return name.endswith(CONV1D)


# ---------------------------------------------------------------------------------------------
# Reading a transformers folder


def is_transformers_folder(path: Path | str) -> bool:
    """A directory with a transformers config.json (it has model_type or architectures)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        return False
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") != "gpt-workbench" and (
        "model_type" in data or "architectures" in data)


def _read_hf_config(path: Path) -> GPTConfig:
    file = path / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelLoadError(f"{file}: not valid JSON ({e})") from None
    if data.get("model_type") != "gpt2":
        raise ModelLoadError(f"{file}: model_type {data.get('model_type')!r} is not supported; "
                             "only GPT-2 models (model_type 'gpt2') can be loaded")

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise ModelLoadError(f"{file}: {what} is not supported by this engine")

    n_embd = data.get("n_embd", 768)
    need(data.get("n_inner") in (None, 4 * n_embd), f"n_inner={data.get('n_inner')}")
    need(data.get("activation_function", "gelu_new") in GELU_TANH,
         f"activation_function={data.get('activation_function')!r} (GPT-2 uses 'gelu_new')")
    need(not data.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx")
    need(data.get("scale_attn_weights", True), "scale_attn_weights=false")
    need(not data.get("add_cross_attention", False), "add_cross_attention")
    need(data.get("tie_word_embeddings", True), "an untied LM head (tie_word_embeddings=false)")
    try:
        return GPTConfig(
            vocab_size=data.get("vocab_size", GPT2_VOCAB_SIZE),
            block_size=data.get("n_positions", data.get("n_ctx", 1024)),
            n_layer=data.get("n_layer", 12), n_head=data.get("n_head", 12), n_embd=n_embd,
            layer_norm_eps=float(data.get("layer_norm_epsilon", 1e-5)), bias=True, dropout=0.0,
        )
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{file}: invalid GPT-2 config: {e}") from None


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of a transformers folder, and the file they came from (for messages)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index, pt = (path / name for name in WEIGHT_FILES)
    try:
        if single.is_file():
            return load_file(str(single)), single
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise ModelLoadError(f"{index}: not a safetensors index ({e})") from None
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if not (path / shard).is_file():
                    raise ModelLoadError(f"{path / shard}: missing (listed in {index.name})")
                state.update(load_file(str(path / shard)))
            return state, index
        if pt.is_file():
            # weights_only=True: tensors and plain containers only, never arbitrary objects.
            state = torch.load(pt, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ModelLoadError(f"{pt}: expected a dict of tensors, got {type(state).__name__}")
            return state, pt
    except ModelLoadError:
        raise
    except pickle.UnpicklingError as e:
        raise ModelLoadError(f"{pt}: refused: it holds something other than tensors, and "
                             f"loading it could run code ({str(e).splitlines()[0]})") from None
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as e:
        bad = single if single.is_file() else index if index.is_file() else pt
        raise ModelLoadError(f"{bad}: cannot be read, truncated or corrupt? ({e})") from None
    raise ModelLoadError(f"{path}: no weights (expected one of {', '.join(WEIGHT_FILES)})")


def hf_to_ours(state: dict[str, torch.Tensor], model: GPT, source: Path) -> dict[str, torch.Tensor]:
    """Map a GPT2LMHeadModel / GPT2Model state dict onto our parameter names and layouts."""
    ours = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith(IGNORED_SUFFIXES) or name == "lm_head.weight":
            continue  # lm_head is tied to wte (checked below when present)
        key = name if name.startswith("transformer.") else f"transformer.{name}"  # GPT2Model files
        if key not in ours:
            raise ModelLoadError(f"{source}: unexpected tensor {name} (is this a GPT-2 model?)")
        if _is_conv1d(key):
            tensor = tensor.t()  # Conv1D [in, out] -> Linear [out, in]
        if tuple(tensor.shape) != tuple(ours[key].shape):
            raise ModelLoadError(f"{source}: tensor {name} has shape {tuple(tensor.shape)}, "
                                 f"config.json implies {tuple(ours[key].shape)}")
        converted[key] = tensor
    missing = sorted(set(ours) - set(converted))
    if missing:
        raise ModelLoadError(f"{source}: missing tensors {', '.join(missing[:5])}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    head = state.get("lm_head.weight")
    if head is not None and not torch.equal(head, converted["transformer.wte.weight"]):
        raise ModelLoadError(f"{source}: lm_head.weight differs from the token embedding; "
                             "only GPT-2's tied LM head is supported")
    return converted


def _read_tokenizer(path: Path, vocab_size: int) -> Tokenizer:
    """The folder's tokenizer; GPT-2's (through tiktoken) when it is GPT-2's vocabulary."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    tok_json, vocab, merges = path / "tokenizer.json", path / "vocab.json", path / "merges.txt"
    hf = None
    try:
        if tok_json.is_file():
            source = tok_json
            hf = HFTokenizer.from_file(str(tok_json))
        elif vocab.is_file() and merges.is_file():
            source = vocab
            hf = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            hf.decoder = decoders.ByteLevel()
            if hf.token_to_id(EOT) is not None:
                hf.add_special_tokens([EOT])
    except Exception as e:  # the tokenizers library raises plain Exception
        raise ModelLoadError(f"{source}: cannot be read as a tokenizer ({e})") from None
    if hf is None:
        if vocab_size == GPT2_VOCAB_SIZE:
            return GPT2Tokenizer()  # GPT-2 BPE assumed for a 50257-token vocabulary
        raise ModelLoadError(
            f"{path}: no tokenizer files (tokenizer.json, or vocab.json + merges.txt) and the "
            f"vocabulary has {vocab_size} tokens, not GPT-2's {GPT2_VOCAB_SIZE}, so the tokenizer "
            "cannot be guessed; add the tokenizer files to the folder")
    try:
        tok = BPETokenizer(hf)
    except ValueError as e:
        raise ModelLoadError(f"{source}: {e}") from None
    if tok.vocab_size > vocab_size:
        raise ModelLoadError(f"{source}: the tokenizer has {tok.vocab_size} tokens but config.json "
                             f"says vocab_size {vocab_size}")
    if tok.vocab_size == GPT2_VOCAB_SIZE:
        gpt2 = GPT2Tokenizer()
        if all(tok.token_bytes(i) == gpt2.token_bytes(i) for i in range(GPT2_VOCAB_SIZE)):
            return gpt2  # the same vocabulary: use tiktoken, which is faster
    return tok


def load_transformers_folder(path: Path | str, device: str | torch.device = "cpu",
                             dtype: torch.dtype | None = None) -> Checkpoint:
    """Load a local transformers GPT-2 folder (config.json + model.safetensors or
    pytorch_model.bin; tokenizer files optional for GPT-2's vocabulary)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path / 'config.json'}: missing (is {path} a transformers folder?)")
    config = _read_hf_config(path)
    tokenizer = _read_tokenizer(path, config.vocab_size)
    state, source = _read_state(path)
    with torch.device("meta"):
        model = GPT(config)
    model = model.to_empty(device="cpu")
    model.lm_head.weight = model.transformer.wte.weight
    converted = hf_to_ours(state, model, source)
    for name, tensor in converted.items():
        if not torch.isfinite(tensor).all():
            raise ModelLoadError(f"{source}: tensor {name} contains NaN or infinity")
    model.load_state_dict(converted, strict=False)  # lm_head.weight is tied to wte
    model.to(device=device, dtype=dtype).eval()
    card_file = path / "README.md"
    card = card_file.read_text(encoding="utf-8", errors="replace") if card_file.is_file() else ""
    return Checkpoint(model=model, tokenizer=tokenizer, path=path, card=card)


# ---------------------------------------------------------------------------------------------
# The Hugging Face Hub


def load_from_hub(repo_id: str, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None, cache_dir: str | Path | None = None,
                  revision: str | None = None) -> Checkpoint:
    """Fetch a GPT-2 model from the hub (e.g. "gpt2", "openai-community/gpt2-medium") into
    huggingface_hub's cache, or use the cached copy, and load it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"the Hugging Face Hub model {repo_id!r}"
    patterns = ["config.json", "*.safetensors", "model.safetensors.index.json", *TOKENIZER_FILES,
                "README.md"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache_dir,
                                        revision=revision))
        if not any((folder / name).is_file() for name in WEIGHT_FILES[:2]):
            # Older repos ship only pytorch_model.bin (read with weights_only=True).
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns + ["pytorch_model.bin"],
                                            cache_dir=cache_dir, revision=revision))
    except HFValidationError:
        raise ModelLoadError(f"{repo_id!r} is not a local directory, a bundled model, or a valid "
                             "hub id (like 'gpt2' or 'openai-community/gpt2')") from None
    except GatedRepoError:
        raise ModelLoadError(f"{where} is gated: accept its terms on huggingface.co and log in "
                             "with `hf auth login`") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{where} does not exist (or is private: log in with "
                             "`hf auth login`); check the spelling, or pass a local folder") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{where} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"cannot fetch {where}: the hub cannot be reached (offline, or HF_HUB_OFFLINE is "
            "set) and the model is not in the local cache; connect once to download it, or "
            "pass a checkpoint directory or a local transformers folder") from None
    except (HfHubHTTPError, OSError) as e:  # other HTTP errors, cache write failures
        raise ModelLoadError(f"cannot fetch {where}: {e}") from None
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{where} has no config.json; it is not a transformers model")
    return load_transformers_folder(folder, device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Writing a transformers folder


def ours_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """Our state dict in GPT2LMHeadModel's names and layouts (biases filled with zeros for a
    bias-free model, which computes exactly the same function)."""
    c = model.config
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: transformers re-ties it to transformer.wte.weight on load
        tensor = tensor.detach().to("cpu", torch.float32)
        out[name] = (tensor.t() if _is_conv1d(name) else tensor).contiguous()  # Linear -> Conv1D
    if not c.bias:
        sizes = {"ln_1": c.n_embd, "ln_2": c.n_embd, "attn.c_attn": 3 * c.n_embd,
                 "attn.c_proj": c.n_embd, "mlp.c_fc": 4 * c.n_embd, "mlp.c_proj": c.n_embd}
        for i in range(c.n_layer):
            for part, size in sizes.items():
                out.setdefault(f"transformer.h.{i}.{part}.bias", torch.zeros(size))
        out.setdefault("transformer.ln_f.bias", torch.zeros(c.n_embd))
    return out


def hf_config(config: GPTConfig, eot_id: int) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size,
        "n_ctx": config.block_size, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "n_head": config.n_head, "n_inner": None, "activation_function": "gelu_new",
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "use_cache": True, "tie_word_embeddings": True,
        "bos_token_id": eot_id, "eos_token_id": eot_id, "torch_dtype": "float32",
    }


def to_transformers(model: GPT, eot_id: int):
    """transformers' GPT2LMHeadModel holding this model's weights, in memory (for side-by-side
    comparisons; transformers is needed only here and in the tests)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(**hf_config(model.config, eot_id)))
    missing, unexpected = hf.load_state_dict(ours_to_hf(model), strict=False)
    # lm_head is tied below; older transformers also list the causal-mask buffers as missing.
    stray = [k for k in missing if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if unexpected or stray:
        raise ValueError(f"weights do not fit GPT2LMHeadModel: missing {stray}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.train(model.training)


def export_transformers(checkpoint: Checkpoint, out_dir: Path | str) -> Path:
    """Write `checkpoint` as a transformers GPT-2 folder (float32 safetensors + config + tokenizer)
    that GPT2LMHeadModel.from_pretrained / AutoTokenizer.from_pretrained load, and so engines
    that serve transformers models (vLLM, TGI). Written atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_transformers_folder(out_dir):
        raise ValueError(f"{out_dir}: exists and is not empty; choose a new directory "
                         "(an earlier export there would be replaced)")
    model, tok = checkpoint.model, checkpoint.tokenizer
    with atomic_directory(out_dir) as tmp:
        atomic_write_json(tmp / "config.json", hf_config(model.config, tok.eot_id))
        atomic_write_json(tmp / "generation_config.json",
                    {"bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id})
        save_safetensors(ours_to_hf(model), tmp / "model.safetensors")  # mode 0644 (umask)
        hf_tok = tok.to_hf()
        hf_tok.save(str(tmp / "tokenizer.json"))
        if isinstance(tok, GPT2Tokenizer):
            # Also the classic pair, for tools that read vocab.json + merges.txt.
            vocab, merges = _vocab_and_merges(hf_tok)
            atomic_write_json(tmp / "vocab.json", vocab)
            (tmp / "merges.txt").write_text(
                "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        atomic_write_json(tmp / "tokenizer_config.json", {
            "tokenizer_class": "GPT2Tokenizer", "model_max_length": model.config.block_size,
            "bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "add_prefix_space": False,
            "add_bos_token": False, "clean_up_tokenization_spaces": False,
            # Our instruction format, so chat servers (vLLM, llama.cpp) need no template flag.
            "chat_template": CHAT_TEMPLATE,
        })
        atomic_write_json(tmp / "special_tokens_map.json",
                    {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT})
        if checkpoint.card:
            (tmp / "README.md").write_text(checkpoint.card, encoding="utf-8")
    return out_dir


def _vocab_and_merges(hf_tok) -> tuple[dict[str, int], list[tuple[str, str]]]:
    data = json.loads(hf_tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in data["merges"]]
    return data["vocab"], merges
