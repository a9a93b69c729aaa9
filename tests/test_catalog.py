"""app.catalog: the models a UI lists, its defaults, and that only listed models load."""

from __future__ import annotations

import pytest

from app.display import bundled_label
from app.workbench import ModelLoadError
from gradio_support import make_workbench


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    return make_workbench(tmp_path_factory.mktemp("catalog"))


def test_model_choices_and_defaults(wb):
    choices = wb.models.choices()
    labels = [label for label, _ in choices]
    assert labels[:2] == ["python (bundled)", bundled_label("story")]
    assert "gpt2 (hub)" in labels
    assert wb.models.default("python").endswith("python")
    assert wb.models.default("story").endswith("story")
    # Tabs switch between the bundled models, but leave another choice alone.
    assert wb.models.suggest("story", wb.models.default("python")) == wb.models.default("story")
    assert wb.models.suggest("story", "gpt2") == "gpt2"


def test_only_listed_models_load(wb, tmp_path):
    assert wb.models.resolve(bundled_label("story")) == wb.models.default("story")
    for bad in ("/etc", str(tmp_path), "../checkpoints/story", "someone/model"):
        with pytest.raises(ValueError, match="unknown model"):
            wb.models.resolve(bad)
    with pytest.raises(ValueError, match="no model chosen"):
        wb.models.resolve("")


def test_hub_model_offline_gives_a_clear_message(wb):
    with pytest.raises(ModelLoadError) as e:
        wb.models.load("gpt2")
    assert "gpt2" in str(e.value)


def test_describe(wb):
    line = wb.models.describe(wb.models.default("story"))
    assert "2 layers × 32 dims" in line and "64-token context" in line and "gpt2" in line
    assert wb.models.card(wb.models.default("story")) == "tiny story test model"


def test_labels(wb):
    assert wb.models.label(wb.models.default("story")) == bundled_label("story")
    assert wb.models.label("/not/listed") == "/not/listed"
