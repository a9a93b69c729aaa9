"""app.policy: what a server that others can reach offers (training, large hub models), and
that the training desk and the model catalogue follow it."""

from __future__ import annotations

import pytest

from app import policy as P
from gradio_support import make_workbench


@pytest.mark.parametrize("host, share, exposed", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False),
    ("[::1]", False, False), (None, False, False), ("0.0.0.0", False, True),
    ("192.168.1.5", False, True), ("myhost.example", False, True), ("127.0.0.1", True, True),
])
def test_is_exposed(host, share, exposed):
    assert P.is_exposed(host, share) is exposed


def test_training_policy():
    assert P.training_policy(False, {}).allowed
    space = P.training_policy(False, {"SPACE_ID": "me/app"})
    assert not space.allowed and "Space" in space.reason and P.ALLOW_TRAINING_ENV in space.reason
    public = P.training_policy(True, {})
    assert not public.allowed and P.ALLOW_TRAINING_ENV in public.reason
    for yes in ("1", "true", "YES"):
        assert P.training_policy(True, {"SPACE_ID": "x", P.ALLOW_TRAINING_ENV: yes}).allowed
    assert not P.training_policy(True, {P.ALLOW_TRAINING_ENV: "0"}).allowed


def test_training_refused_on_an_exposed_server(tmp_path, monkeypatch):
    monkeypatch.delenv(P.ALLOW_TRAINING_ENV, raising=False)
    public = make_workbench(tmp_path, exposed=True)
    for call in (lambda: public.training.start("cpu-demo", hf_name="x"),
                 lambda: public.training.stop(),
                 lambda: public.training.resume("run")):
        with pytest.raises(PermissionError, match=P.ALLOW_TRAINING_ENV):
            call()
    assert not (tmp_path / "runs").exists()


def test_large_hub_models_only_on_a_local_server_or_by_opt_in(tmp_path, monkeypatch):
    monkeypatch.delenv(P.ALLOW_LARGE_MODELS_ENV, raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    hub = lambda w: [spec for _label, spec in w.models.choices() if spec.startswith("gpt2")]
    local = make_workbench(tmp_path / "local")
    assert hub(local) == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
    public = make_workbench(tmp_path / "public", exposed=True)
    assert hub(public) == ["gpt2", "gpt2-medium"]
    with pytest.raises(ValueError, match=f"gpt2-xl is not offered.*{P.ALLOW_LARGE_MODELS_ENV}=1"):
        public.models.load("gpt2-xl")
    monkeypatch.setenv("SPACE_ID", "someone/workbench")
    assert hub(local) == ["gpt2", "gpt2-medium"]
    monkeypatch.setenv(P.ALLOW_LARGE_MODELS_ENV, "1")
    assert hub(public) == ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
