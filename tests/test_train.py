"""The training loop end to end on tiny models, its options, the run directory and the CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from engine.__main__ import main
from engine.checkpoint import list_checkpoints, load_checkpoint
from engine.loading import load_model
from engine.metrics import read_metrics
from engine.presets import PRESETS
from engine.run_dir import check_run_dir
from engine.train import lr_at, make_optimizer, train
from engine.train_config import TrainConfig, resolve_config

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the fox ran to a river and saw fish in cold water while birds sang over old trees "
         "near the quiet hill where children played every long summer day").split()


def corpus(path, n_words=4000, seed=0):
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(n_words // 12)]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tiny(tmp_path, **overrides) -> TrainConfig:
    data = tmp_path / "corpus.txt"
    if not data.exists():
        corpus(data)
    values = dict(data=str(data), out=str(tmp_path / "run"), n_layer=2, n_head=2, n_embd=32,
                  block_size=32, tokenizer="bpe", vocab_size=300, batch_size=4, max_steps=6,
                  warmup_steps=2, lr=3e-3, eval_every=3, eval_batches=2, save_every=2,
                  keep_last=2, log_every=1, sample_tokens=8, cache_dir=str(tmp_path / "cache"),
                  seed=0, device="cpu")  # timings and DDP comparisons assume the CPU
    values.update(overrides)
    return TrainConfig(**values)


# ---- pieces


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(data="x", out="y", lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(0.55e-3)
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    lrs = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_weight_decay_only_on_matrices(tiny_model):
    opt = make_optimizer(tiny_model, TrainConfig(data="x", out="y", weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == tiny_model.num_params()  # the tied head is one parameter, counted once


def test_chunked_loss_equals_the_models_loss_and_gradients(tiny_model):
    # The CPU training path (GPT layers + chunked linear/cross-entropy) must compute exactly
    # what GPT.forward(idx, targets) computes, ignored targets included.
    from engine.chunked_loss import ChunkedLossGPT

    torch.manual_seed(0)
    V = tiny_model.config.vocab_size
    x = torch.randint(0, V, (3, 40))
    y = torch.randint(0, V, (3, 40))
    y[0, :10] = -100
    y[2, 25:] = -100
    tiny_model.train()
    _, ref = tiny_model(x, y)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    wrapped = ChunkedLossGPT(tiny_model)
    wrapped.chunk = 16  # several chunks, the last one partial
    _, loss = wrapped(x, y)
    (loss * 2).backward()  # a scaled upstream gradient is honoured
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * ref_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_presets_resolve_and_flags_win():
    ts = resolve_config({"data": "d", "out": "o"}, preset="tinystories-gpu")
    assert (ts.n_layer, ts.n_head, ts.n_embd, ts.block_size, ts.tokenizer, ts.batch_size, ts.lr) == \
        (4, 4, 256, 512, "gpt2", 52, 5e-4)
    cfg = resolve_config({"data": "d", "out": "o", "max_steps": 7}, preset="cpu-demo")
    assert cfg.max_steps == 7 and cfg.n_embd == PRESETS["cpu-demo"]["n_embd"]
    for name in ("story-cpu", "python-cpu", "python-sft-cpu"):
        resolve_config({"data": "d", "out": "o"}, preset=name)
    with pytest.raises(ValueError, match="unknown training preset 'nope'"):
        resolve_config({"data": "d", "out": "o"}, preset="nope")


@pytest.mark.parametrize("option, message", [
    ({"lr": -0.001}, "lr must be a number in"),
    ({"batch_size": 0}, "batch-size must be an integer >= 1"),
    ({"block_size": 100_000}, "block-size 100000 is larger than this trainer allows"),
    ({"n_embd": 30, "n_head": 4}, "divisible"),
    ({"max_steps": 2.5}, "max-steps must be an integer"),
    ({"grad_clip": float("nan")}, "grad-clip must be a number"),
    ({"mode": "finetune"}, "mode must be"),
    ({"tokenizer": "sentencepiece"}, "tokenizer must be"),
    ({"vocab_size": 100}, "vocab-size must be between"),
    ({"bogus": 1}, "unknown training option"),
    ({"device": "tpu"}, "device must be one of"),
])
def test_nonsense_hyperparameters_are_refused(option, message):
    with pytest.raises(ValueError, match=message):
        resolve_config({"data": "d", "out": "o", **option})


def test_run_directory_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a training run"):
        check_run_dir(tiny(tmp_path), resume=False, force=True)
    (run / "notes.txt").unlink()
    (run / "train_config.json").write_text("{}")
    check_run_dir(tiny(tmp_path), resume=False, force=False)  # no checkpoint: may start over
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    (run / "checkpoints" / "step-2" / "config.json").write_text('{"format": "gpt-workbench"}')
    with pytest.raises(ValueError, match="already holds a training run, last checkpoint at step 2"
                                         ".*--resume.*--force"):
        check_run_dir(tiny(tmp_path), resume=False, force=False)
    with pytest.raises(ValueError, match="contradict"):
        check_run_dir(tiny(tmp_path), resume=True, force=True)
    check_run_dir(tiny(tmp_path), resume=True, force=False)
    check_run_dir(tiny(tmp_path), resume=False, force=True)


# ---- end to end


def test_pretrain_end_to_end(tmp_path):
    cfg = tiny(tmp_path, max_steps=8)
    events = []
    summary = train(cfg, on_event=events.append, progress=False)
    run = tmp_path / "run"
    assert summary["state"] == "finished" and summary["step"] == 8
    assert summary["tokens"] == 8 * 4 * 32
    metrics = read_metrics(run / "metrics.jsonl")
    assert [e["type"] for e in metrics] == [e["type"] for e in events]
    trains = [e for e in metrics if e["type"] == "train"]
    assert [e["step"] for e in trains] == list(range(1, 9))
    for e in trains:
        assert {"step", "loss", "lr", "tokens_per_s", "tokens", "elapsed_s", "time"} <= set(e)
        assert e["tokens_per_s"] > 0 and math.isfinite(e["loss"])
    assert trains[-1]["loss"] < trains[0]["loss"]
    evals = [e for e in metrics if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6, 8]
    assert all(e["val_ppl"] == pytest.approx(math.exp(e["val_loss"]), rel=1e-3) for e in evals)
    assert [e["step"] for e in metrics if e["type"] == "sample"] == [3, 6, 8]
    assert metrics[0]["type"] == "start" and metrics[-1]["type"] == "end"
    # keep_last=2 step checkpoints, plus best
    assert [s for s, _ in list_checkpoints(run)] == [6, 8]
    best = load_checkpoint(run / "checkpoints" / "best")
    assert json.loads((best.path / "trainer_state.json").read_text())["val_loss"] == \
        pytest.approx(min(e["val_loss"] for e in evals), abs=1e-4)
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    # the run directory loads anywhere a model is expected, with the trained tokenizer
    ckpt = load_model(str(run))
    assert ckpt.path.name == "step-8" and ckpt.model.config.n_layer == 2
    assert ckpt.tokenizer.vocab_size <= 300
    card = (ckpt.path / "README.md").read_text()
    assert "python -m engine train" in card and "validation loss" in card


def test_sft_from_a_checkpoint_learns_the_responses(tmp_path):
    train(tiny(tmp_path, max_steps=4, block_size=96), progress=False)
    rows = [{"instruction": f"What colour is fox number {i}?", "input": "", "output": "red"}
            for i in range(24)]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = TrainConfig(data=str(qa), out=str(tmp_path / "sft"), init_from=str(tmp_path / "run"),
                      batch_size=4, max_steps=20, warmup_steps=1, lr=1e-2, eval_every=10,
                      eval_batches=1, save_every=20, log_every=1, sample_tokens=4,
                      cache_dir=str(tmp_path / "cache"), val_fraction=0.2)
    summary = train(cfg, progress=False)
    assert summary["mode"] == "sft"
    trains = [e for e in read_metrics(tmp_path / "sft" / "metrics.jsonl") if e["type"] == "train"]
    assert trains[-1]["loss"] < 0.3 * trains[0]["loss"]  # "red" + EOT is quickly learnt
    base = load_model(str(tmp_path / "run"))
    tuned = load_model(str(tmp_path / "sft"))
    assert tuned.model.config == base.model.config  # shape and tokenizer carried over
    assert tuned.tokenizer.vocab_size == base.tokenizer.vocab_size
    sample = [e for e in read_metrics(tmp_path / "sft" / "metrics.jsonl") if e["type"] == "sample"][0]
    assert sample["prompt"].startswith("### Instruction:\nWhat colour is fox number")


def test_sft_from_an_imported_transformers_model(tmp_path, tiny_gpt2_model):
    # "ours or imported GPT-2": a transformers GPT2LMHeadModel folder (here a tiny one we
    # export; from the Hub it would be `--init-from gpt2`) with GPT-2's tokenizer.
    from engine.checkpoint import Checkpoint
    from engine.hub import export_transformers
    from engine.tokenizer import GPT2Tokenizer

    export_transformers(Checkpoint(tiny_gpt2_model, GPT2Tokenizer(), tmp_path / "x"), tmp_path / "hf")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"instruction": f"Name fox {i}.", "input": "", "output": "Red"})
                            for i in range(8)))
    cfg = TrainConfig(data=str(qa), out=str(tmp_path / "sft"), init_from=str(tmp_path / "hf"),
                      batch_size=4, max_steps=2, warmup_steps=1, eval_every=2, eval_batches=1,
                      sample_tokens=2, cache_dir=str(tmp_path / "cache"), val_fraction=0.25)
    assert train(cfg, progress=False)["mode"] == "sft"
    tuned = load_model(str(tmp_path / "sft"))
    assert tuned.tokenizer.kind == "gpt2" and tuned.model.config.n_embd == 32
    before = tiny_gpt2_model.state_dict()["transformer.h.0.mlp.c_fc.weight"]
    assert not torch.equal(tuned.model.state_dict()["transformer.h.0.mlp.c_fc.weight"], before)


def test_sft_context_larger_than_the_model_is_refused(tmp_path):
    train(tiny(tmp_path, max_steps=2), progress=False)
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"instruction": "q", "output": "a"}))
    cfg = TrainConfig(data=str(qa), out=str(tmp_path / "sft"), init_from=str(tmp_path / "run"),
                      block_size=64, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="block-size 64 is larger than the context window"):
        train(cfg, progress=False)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_paths_run_on_cpu(tmp_path, dtype):
    # bf16 autocast, and fp16 autocast with a GradScaler: the code paths used on GPUs.
    summary = train(tiny(tmp_path, max_steps=2, eval_every=2, dtype=dtype), progress=False)
    assert summary["state"] == "finished" and math.isfinite(summary["val_loss"])
    # The dtype was used: the losses are not float32's, and fp16 alone keeps a loss scale.
    train(tiny(tmp_path, out=str(tmp_path / "fp32"), max_steps=2, eval_every=2), progress=False)
    losses = [[e["loss"] for e in read_metrics(tmp_path / run / "metrics.jsonl")
               if e["type"] == "train"] for run in ("run", "fp32")]
    assert len(losses[0]) == 2 and losses[0] != losses[1], losses
    blob = torch.load(list_checkpoints(tmp_path / "run")[-1][1] / "optimizer.pt",
                      weights_only=True)
    assert (blob["scaler"] is not None) == (dtype == "float16")


# ---- command line


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--out", "--preset", "--max-steps", "--save-every", "--resume",
                 "--force", "--lr", "--grad-accum", "--init-from", "--val-data", "--compile"):
        assert flag in out


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1"], "lr must be a number in"),
    (["--batch-size", "0"], "batch-size must be an integer >= 1"),
    (["--data", "MISSING"], "no such file or directory"),
])
def test_cli_bad_input_is_one_line_and_spends_nothing(tmp_path, capsys, args, message):
    corpus(tmp_path / "c.txt")
    base = ["train", "--data", str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"),
            "--preset", "cpu-demo", "--cache-dir", str(tmp_path / "cache")]
    args = [str(tmp_path / a) if a == "MISSING" else a for a in args]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert not (tmp_path / "cache").exists()  # no tokenizing either


def test_cli_train_then_eval_matches_the_runs_val_loss(tmp_path, capsys):
    corpus(tmp_path / "c.txt")
    common = ["--cache-dir", str(tmp_path / "cache")]
    rc = main(["train", "--data", str(tmp_path / "c.txt"), "--out", str(tmp_path / "r"),
               "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
               "--tokenizer", "bpe", "--vocab-size", "300", "--batch-size", "4", "--max-steps", "3",
               "--eval-every", "3", "--eval-batches", "50", "--no-progress", *common])
    assert rc == 0
    assert "finished at step 3" in capsys.readouterr().out
    val = [e for e in read_metrics(tmp_path / "r" / "metrics.jsonl") if e["type"] == "eval"][-1]
    assert main(["eval", "--model", str(tmp_path / "r"), "--data", str(tmp_path / "c.txt"),
                 "--batch-size", "4", "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loss"] == pytest.approx(val["val_loss"], abs=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    # the same command again refuses to overwrite the run
    assert main(["train", "--data", str(tmp_path / "c.txt"), "--out", str(tmp_path / "r"), *common]) == 2
    assert "already holds a training run" in capsys.readouterr().err


def _flags(tmp_path, **changes) -> list[str]:
    values = {"--data": str(tmp_path / "c.txt"), "--out": str(tmp_path / "r"), "--n-layer": "2",
              "--n-head": "2", "--n-embd": "32", "--block-size": "32", "--tokenizer": "bpe",
              "--vocab-size": "300", "--batch-size": "4", "--max-steps": "1000",
              "--save-every": "1000", "--eval-every": "1000", "--eval-batches": "1",
              "--log-every": "1", "--sample-tokens": "4", "--cache-dir": str(tmp_path / "cache")}
    values.update(changes)
    return [a for k, v in values.items() for a in (k, v)] + ["--no-progress"]


def _crash_before_the_first_checkpoint(tmp_path) -> None:
    """Start a run that saves only at step 1000 and kill it (SIGKILL) once it is training."""
    import os
    import subprocess
    import sys
    import time

    from engine.run_dir import check_run_dir

    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "train", *_flags(tmp_path)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not any(e["type"] == "train" for e in read_metrics(run / "metrics.jsonl")):
            assert proc.poll() is None and time.time() < deadline, "the run did not start"
            time.sleep(0.05)
        # while it trains, nothing else may start in its directory
        with pytest.raises(ValueError, match=f"a training process \\(pid {proc.pid}\\) is using"):
            check_run_dir(TrainConfig(data="x", out=str(run)), resume=False, force=True)
    finally:
        proc.kill()
        proc.wait()
    assert list_checkpoints(run) == [] and (run / "train_config.json").is_file()


def test_a_run_that_never_saved_is_started_over_and_resume_says_where_it_starts(tmp_path, capsys):
    corpus(tmp_path / "c.txt")
    _crash_before_the_first_checkpoint(tmp_path)
    # the same command again: nothing to keep, so it simply starts over (no --force needed)
    assert main(["train", *_flags(tmp_path, **{"--max-steps": "2"})]) == 0
    err = capsys.readouterr().err
    assert f"note: {tmp_path / 'r'} held a run that never saved a checkpoint; starting it over" in err
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [2]
    assert [e["step"] for e in read_metrics(tmp_path / "r" / "metrics.jsonl")
            if e["type"] == "start"] == [0]  # the crashed attempt's metrics are gone

    # with a checkpoint, the same command is refused, and --resume says where it continues
    assert main(["train", *_flags(tmp_path, **{"--max-steps": "2"})]) == 2
    assert "already holds a training run, last checkpoint at step 2" in capsys.readouterr().err
    assert main(["train", *_flags(tmp_path, **{"--max-steps": "3"}), "--resume"]) == 0
    out = capsys.readouterr()
    assert (f"resume: continuing {tmp_path / 'r'} from step 2 "
            f"({tmp_path / 'r' / 'checkpoints' / 'step-2'}); 1 more step to --max-steps 3") in out.err
    assert "finished at step 3" in out.out


def test_resume_of_a_run_that_never_saved_starts_fresh_and_says_why(tmp_path, capsys):
    corpus(tmp_path / "c.txt")
    _crash_before_the_first_checkpoint(tmp_path)
    assert main(["train", *_flags(tmp_path, **{"--max-steps": "2"}), "--resume"]) == 0
    err = capsys.readouterr().err
    assert (f"resume: {tmp_path / 'r'} has nothing to continue from: it stopped before its first "
            "checkpoint (it saves every 1000 steps and at the end); training starts from step 0 "
            "with the run's options") in err
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [2]


def test_training_in_a_terminal_draws_bars_and_shows_validation_loss(tmp_path):
    # A terminal (a pseudo-terminal here) gets tqdm bars: "tokenizing" has no total, which once
    # crashed (a tqdm bar without a total has no truth value). Piped output gets one line per
    # log step. Both show the validation loss at each evaluation, not only at the end.
    import os
    import sys

    from terminal import run_in_terminal, run_piped

    corpus(tmp_path / "c.txt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    flags = _flags(tmp_path, **{"--max-steps": "4", "--eval-every": "2", "--save-every": "4"})
    flags.remove("--no-progress")
    argv = [sys.executable, "-m", "engine", "train", *flags]
    tty = run_in_terminal(argv, cwd=ROOT, env=env, timeout=120)
    assert tty.returncode == 0, tty.output
    assert "tokenizing: " in tty.output and "tok/s]" in tty.output
    assert "training: 100%" in tty.output and "4/4" in tty.output
    lines = tty.lines()
    assert any(ln.startswith("step 2/4  val loss ") for ln in lines)
    assert any(ln.startswith("step 4/4  val loss ") for ln in lines)
    assert any(ln.startswith("finished at step 4") for ln in lines)
    assert "Traceback" not in tty.output

    piped = run_piped(argv + ["--out", str(tmp_path / "piped")], cwd=ROOT, env=env, timeout=120)
    assert piped.returncode == 0, piped.output
    assert "%|" not in piped.output  # no bars
    lines = piped.lines()
    assert any(ln.startswith("step 1/4  loss ") for ln in lines)
    val2 = next(i for i, ln in enumerate(lines) if ln.startswith("step 2/4  val loss "))
    step3 = next(i for i, ln in enumerate(lines) if ln.startswith("step 3/4  loss "))
    assert val2 < step3  # during training, not at the end
