"""The Gradio app's HTTP API through gradio_client, against a server on a loopback port:
streaming, validation errors, awkward input, and 8 concurrent chat streams that must not mix."""

from __future__ import annotations

import concurrent.futures as cf

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app.display import bundled_label
from app.limits import clean_text, sampling_params
from gradio_support import make_workbench, start_server

pytestmark = pytest.mark.slow

GREEDY = dict(temperature=0, top_k=50, top_p=0.95, repetition_penalty=1.1, max_new_tokens=24,
              seed=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    wb = make_workbench(tmp_path_factory.mktemp("api"))
    demo, url = start_server(wb)
    yield wb, url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[1], verbose=False)


def chat_args(wb, message, mode="Free chat", history=None, **sampling):
    s = {**GREEDY, **sampling}
    return dict(message=message, history=history or [], mode_label=mode,
                model=wb.models.default("python"), **s)


def test_models_endpoint(server, client):
    wb, _ = server
    models = client.predict(api_name="/models")
    assert [m[0] for m in models][:2] == ["python (bundled)", bundled_label("story")]
    line, card = client.predict(wb.models.default("story"), api_name="/model_info")
    assert line.startswith("1.6M") and card == "tiny story test model"
    line, card = client.predict("gpt2", api_name="/model_info")  # the hub, offline
    assert line.startswith("**Cannot load this model.**") and "gpt2" in line and card == ""


def test_chat_streams(server, client):
    wb, _ = server
    job = client.submit(**chat_args(wb, "Tell me about cats", max_new_tokens=200),
                        api_name="/chat")
    updates = list(job)
    assert len(updates) >= 3  # the question, partial answers, the final answer
    display, state, _textbox, stats = job.result()
    assert [m["role"] for m in state] == ["user", "assistant"]
    assert state[0]["content"] == "Tell me about cats" and state[1]["content"]
    assert "tokens/s" in stats
    # The same greedy request straight through the engine gives the same answer.
    expected = wb.chat("Tell me about cats", [], "chat", wb.models.default("python"),
                       sampling_params(**{**GREEDY, "max_new_tokens": 200})).text()
    assert state[1]["content"] == expected


def test_chat_refusal_via_api(server, client):
    wb, _ = server
    _, state, _, stats = client.predict(
        **chat_args(wb, "Where can I buy a pet python snake?", mode="Python assistant"),
        api_name="/chat")
    assert state[1]["content"].startswith("Sorry, I'm a Python assistant")
    assert state[2]["metadata"]["title"] == "Why I declined"


def test_an_empty_message_gets_a_hint_and_keeps_the_chat(server, client):
    # Enter on an empty box is not an error (issue 14): the chat stays, the stats line says why.
    wb, _ = server
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    shown, state, _, stats = client.predict(**{**chat_args(wb, "   "), "history": history},
                                            api_name="/chat")
    # The chat and its state are left as they are: updates that carry no new value.
    assert "value" not in shown and "value" not in state, (shown, state)
    assert "Type a message first" in stats


@pytest.mark.parametrize("change, message", [
    (dict(message="x" * 100_000), "100,000 characters long; the limit is 8,000"),
    # Gradio checks slider ranges itself before the handler runs.
    (dict(top_p=1.5), "Value 1.5 is greater than maximum value 1.0"),
    (dict(temperature=-3), "Value -3 is less than minimum value 0.0"),
    (dict(max_new_tokens=50_000), "Value 50000 is greater than maximum value 1024"),
    (dict(top_k=2.5), "Top_k must be a whole number, got 2.5"),
    (dict(seed=-7), "Value -7 is less than minimum value -1"),
    (dict(mode_label="Shouting"), "'Shouting' (type: <class 'str'>) is not in the list of choices"),
    (dict(model="/etc"), "Unknown model '/etc'"),
    (dict(history=[{"role": "root", "content": "x"}]), "role must be 'user' or 'assistant'"),
])
def test_validation_errors_are_messages(server, client, change, message):
    wb, _ = server
    with pytest.raises(AppError) as e:
        client.predict(**{**chat_args(wb, "hello"), **change}, api_name="/chat")
    assert message in str(e.value)


def test_awkward_text_is_served(server, client):
    wb, _ = server
    for text in ("emoji 🙂🚀 and 世界", "שלום עולם, مرحبا بالعالم", "ctrl\x00\x07\x1b[31m chars",
                 "<script>alert('x')</script>"):
        _, state, _, _ = client.predict(**chat_args(wb, text, max_new_tokens=4), api_name="/chat")
        assert state[0]["content"] == clean_text(text)
    # After all of that the server still answers.
    assert client.predict(api_name="/models")


def test_story_and_explorer_endpoints(server, client):
    wb, _ = server
    story, stats = client.predict(prompt="Once upon a time", model=wb.models.default("story"),
                                  **GREEDY, api_name="/story")
    assert story and "tokens/s" in stats
    html = client.predict(prompt="Once upon a time", story=story, top=5,
                          model=wb.models.default("story"), **GREEDY, api_name="/explain")
    assert "<table" in html and "greedy" in html
    with pytest.raises(AppError, match="Top must be a whole number between 1 and 30, got 3.5"):
        client.predict(prompt="x", story="", top=3.5, model=wb.models.default("story"), **GREEDY,
                       api_name="/explain")


def test_training_status_and_checks_via_api(server, client):
    status = client.predict(api_name="/train_status")
    assert status["state"] == "idle"
    with pytest.raises(AppError, match="is not a Hugging Face dataset name"):
        client.predict(preset="cpu-demo", source="Hugging Face dataset", corpus=None,
                       upload=None, hf_name="hf:/etc", run_name="", init_from="(a new model)",
                       param_7=5, param_8=0.001, param_9=2, param_10=16, api_name="/train_start")


def test_eight_concurrent_chats_do_not_mix(server):
    """8 clients stream at once through the queue; each gets exactly the answer that its own
    request gives alone (greedy decoding, different questions)."""
    wb, url = server
    questions = [f"Question number {i}: what do you think about {topic}?" for i, topic in
                 enumerate(["rivers", "cats", "clocks", "stars", "bread", "rain", "maps", "owls"])]
    model = wb.models.default("python")
    params = sampling_params(**{**GREEDY, "max_new_tokens": 48})
    expected = [wb.chat(q, [], "chat", model, params).text() for q in questions]
    assert len(set(expected)) > 1  # different questions, different answers: mixing would show

    def ask(q):
        c = Client(url, verbose=False)
        job = c.submit(**chat_args(wb, q, max_new_tokens=48), api_name="/chat")
        partials = [out[1][-1]["content"] for out in job if len(out[1]) == 2]
        return job.result()[1], partials

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, questions))
    for q, want, (state, partials) in zip(questions, expected, results):
        assert state[0]["content"] == q
        assert state[1]["content"] == want
        assert all(want.startswith(p) for p in partials)  # every streamed prefix is its own


def test_default_seed_draws_anew(server, client):
    """The seed box starts at -1 (a fresh draw each time); the same seed gives the same text."""
    wb, _ = server
    args = {k: v for k, v in chat_args(wb, "Tell me a story", temperature=1.0,
                                       max_new_tokens=16).items() if k != "seed"}
    answers = {client.predict(**args, api_name="/chat")[1][1]["content"] for _ in range(3)}
    assert len(answers) > 1
    seeded = {client.predict(**args, seed=5, api_name="/chat")[1][1]["content"] for _ in range(2)}
    assert len(seeded) == 1


def test_uploaded_training_data_is_checked(server, client, tmp_path):
    """An upload travels through Gradio to app.training's checks (no job starts)."""
    from gradio_client import handle_file

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "notes.pdf"
    binary.write_bytes(b"%PDF-1.4 \x00\x01")
    form = dict(preset="cpu-demo", source="Upload a file", corpus=None, hf_name="",
                run_name="", init_from="(a new model)", param_7=5, param_8=0.001, param_9=2,
                param_10=16, api_name="/train_start")
    with pytest.raises(AppError, match="is empty"):
        client.predict(upload=handle_file(str(empty)), **form)
    with pytest.raises(AppError, match=r"Invalid file type.*'\.txt', '\.md', '\.jsonl'"):
        client.predict(upload=handle_file(str(binary)), **form)  # Gradio checks file_types
    assert client.predict(api_name="/train_status")["state"] == "idle"
