"""CodeQuestionFilter: is this message a Python (or general programming) question, and why?

The Python assistant answers programming questions and politely declines the rest. The filter
is a transparent evidence scorer, not a black box, so every decision comes with a reason a person
can read ("mentions a Python error (KeyError)", "'pandas' here is the animal (bamboo, zoo)"):

1. Evidence for programming, each a log-odds weight: the word Python, Python tooling (numpy,
   pip, pytest...), programming vocabulary (recursion, regex, git...), words that are only
   sometimes about code (function, class, loop, string...), requests for code ("write a function
   that..."), and code itself (a traceback, `def f(`, `import os`, `print(`, a Python error name).
   The vocabulary lives in engine/assets/code_filter_lexicon.json and covers English, Spanish,
   French, German, Portuguese, Italian, Chinese, Russian and a little Japanese. Each vocabulary
   is compiled into one character-trie regex, so thousands of terms cost a fraction of a ms.
2. Word senses: the traps that use programming words in another sense (python the snake, Monty
   Python, a class at school, importing a car, the function of the liver, pandas the animal,
   fairy lights, looping a video, guitar strings, Java the island, a bug in the garden, cookies in
   the oven). A sense fires when its trigger word appears with its context words; it cancels the
   trigger's evidence and adds a penalty. Weak context words ("long", "eat") count only when
   nothing else in the message is clearly about code ("my python list is too long" stays code).
3. Another programming language (C pointers, CSS centering, a JavaScript error) with no Python
   angle is declined, and the decision says which language, so the refusal can say the
   assistant helps with Python.
4. A trained decision (code_filter_model.DecisionHead, logistic regressions fitted on the
   labelled sets) weighs that evidence. A word that is also an everyday word ("array", "kernel",
   "shell", "python", "string") counts only when something backs it: code, an error, a request
   for code, or a word that is only ever code. When the head is unsure, or the evidence is such
   a lone everyday word, or there is none at all, a small English sentence model
   (all-MiniLM-L6-v2, with the filter's own fine-tuned copy of its top two layers) reads the
   whole message and the head decides from both; the reason then
   says what the message reads like ("reads like a question about gardening, not code").
5. Follow-ups: "and for a dict?" after a Python question is accepted from the conversation, but
   only a message that leans on it (elliptical, referential, or with no content of its own) and
   shows no other topic; "Can you recommend a recipe for pancakes?" is judged on its own. A
   message that leans on an everyday conversation ("which strings should I use?" after "I just
   bought a guitar") is about what that conversation was about.

Every pattern runs in linear time (tests/test_code_filter.py checks it on adversarial repeats).
Measured accuracy and time: docs/assistant.md.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .code_filter_language import is_english

LEXICON_FILE = Path(__file__).parent / "assets" / "code_filter_lexicon.json"
MAX_CHARS = 20_000  # longer pastes are judged on their first and last 10k characters
# Per-group caps: many weak words must not add up to a certainty (first hit + 1 per extra).
GROUP_CAP = {"python": 3.5, "python_tool": 6.0, "python_concept": 4.0, "programming": 5.0,
             "ambiguous": 3.0, "code_intent": 2.0, "data_words": 3.5, "code_request": 1.5,
             "automation": 2.5}
STRONG_GROUPS = ("python_tool", "python_concept", "programming", "code_intent", "language_talk")
VOCABULARY_GROUPS = ("python", "python_tool", "python_concept", "programming", "data_words", "ambiguous")
# Letters that continue a word; CJK is not here, so "python怎么" still matches "python".
_WORD = r"a-zA-Z0-9_\u00C0-\u024F\u0400-\u04FF"


@dataclass(frozen=True)
class FilterDecision:
    is_coding: bool
    score: float  # in [0, 1]: how sure the filter is that this is a programming question
    reason: str  # short, human-readable evidence
    other_language: str | None = None  # e.g. "C" when declined for being about another language
    follow_up: bool = False  # accepted because the conversation before it was about code
    evidence: tuple[str, ...] = field(default=())  # every piece of evidence, strongest first


def _term_regex(terms: Iterable[str]) -> re.Pattern:
    """One regex for a list of terms. Latin terms need word boundaries (a plural s/es allowed),
    Cyrillic terms and Latin terms written with a trailing "*" ("döngü*", "posortow*": Polish,
    Turkish... inflect) are stems (prefix match), CJK terms are substrings. The terms are
    compiled as a character trie, so matching costs about the same for 20 terms or 700."""
    buckets: dict[tuple[str, str], list[str]] = {}
    for term in set(terms):
        if term.endswith("*") or re.search(r"[\u0400-\u04FF]", term):
            term = term.rstrip("*")
            edges = (rf"(?<![{_WORD}])", "")
        elif re.search(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", term):
            edges = ("", "")
        else:
            # Terms that start or end with punctuation ("self.", "**kwargs") set their own edge.
            edges = (rf"(?<![{_WORD}])" if re.match(rf"[{_WORD}]", term) else "",
                     rf"(?:s|es)?(?![{_WORD}])" if re.search(rf"[{_WORD}]$", term) else "")
        buckets.setdefault(edges, []).append(" ".join(term.split()))
    parts = [left + _trie(words) + right for (left, right), words in sorted(buckets.items())]
    return re.compile("|".join(parts) or r"(?!x)x", re.IGNORECASE)


def _trie(words: Iterable[str]) -> str:
    """A regex matching exactly these words, shaped as a trie (longest match first)."""
    root: dict = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        alts = [(r"\s+" if ch == " " else re.escape(ch)) + emit(child)
                for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:  # a word ends here, and longer ones go on
            return ("(?:" + body + ")?") if len(alts) == 1 else body + "?"
        return body

    return "(?:" + emit(root) + ")"


def _explained(term: str, cancelled: set[str]) -> bool:
    """Is a matched lexicon term one of the words a sense explained? Stems and CJK terms match
    inside a longer word ("питон" in "питоны", "パイソン" in "ボールパイソン"), and a Cyrillic
    trigger is a stem of the term ("питон", matched in "питоном")."""
    return (term in cancelled or term.rstrip("s") in cancelled
            or any(term in word for word in cancelled if len(word) > len(term))
            or any(term.startswith(word) for word in cancelled if _CYRILLIC.match(word)))


def _holds(phrase: str, cancelled: set[str]) -> bool:
    """Does a matched phrase contain a word a sense explained?"""
    return any(_explained(w, cancelled) for w in _WORD_RE.findall(phrase.lower()))


@functools.lru_cache(maxsize=4096)
def _canonical(match: str, known: frozenset[str]) -> str:
    """Map a matched string back to its lexicon term (undo the plural, collapse spaces)."""
    m = " ".join(match.lower().split())
    for cand in (m, m[:-1], m[:-2]):
        if cand in known:
            return cand
    for term in known:  # Cyrillic stems match a longer word
        if m.startswith(term):
            return term
    return m


@dataclass
class _Group:
    name: str
    label: str
    weight: float
    python_angle: bool
    terms: frozenset[str]
    regex: re.Pattern | None
    patterns: list[re.Pattern]
    # Words that must appear too for the group to count (the lexicon's "needs"): "automatisch"
    # is no request for a program until it acts on something a program handles ("Ordner").
    needs: re.Pattern | None = None
    # Terms of a group without a Python angle that give one ("pandas", "pillow": Python's
    # libraries, once no sense has made them the animal or the cushion).
    angle_terms: frozenset[str] = frozenset()


@dataclass
class _Sense:
    word: str
    meaning: str
    reason: str
    weight: float
    triggers: re.Pattern
    strong: re.Pattern
    weak: re.Pattern
    strong_terms: frozenset[str]
    weak_terms: frozenset[str]
    unless: re.Pattern  # phrases that rule this sense out ("snake game" is code, not a snake)
    marked: re.Pattern  # phrases that are this sense by themselves ("a python", "pythons")


class _Ordered:
    """["A", "B"] in the lexicon: A, and B somewhere after it. The linear form of A(?=.*B),
    which backtracks quadratically when A repeats ("java " * 1600): if any A has a B after it,
    the first A does, so one search for A and one for B from there decide it."""

    def __init__(self, parts: Sequence[str]) -> None:
        self.first, self.then = (re.compile(p, re.IGNORECASE | re.DOTALL) for p in parts)

    def search(self, text: str):
        m = self.first.search(text)
        return m and self.then.search(text, m.end())


@dataclass
class _Language:
    name: str
    patterns: list[re.Pattern]


class CodeQuestionFilter:
    """Decides whether a message is a Python / programming question. Thread-safe once built."""

    def __init__(self, lexicon_file: Path | str = LEXICON_FILE, use_model: bool | None = None,
                 head_file: Path | str | None = None) -> None:
        """use_model: read the message with the sentence model when the rules are unsure (None:
        when its package is installed, with a warning when it is not; True: require it; False:
        the rules' evidence alone, weighed by the same trained head)."""
        lex = _load_lexicon(str(lexicon_file))
        from . import code_filter_model

        self.head = code_filter_model.DecisionHead(head_file)
        if use_model is None:
            use_model = code_filter_model.available()
            if not use_model:
                code_filter_model.warn_missing()
        elif use_model and not code_filter_model.available():
            raise ValueError("use_model=True needs the sentence model: " + code_filter_model.INSTALL_HINT)
        self.model = self.head if use_model else None
        self.groups = []
        for g in lex["groups"]:
            raw = [t.lower() for t in g.get("terms", [])]
            terms = frozenset(t.rstrip("*") for t in raw)  # "döngü*": a stem
            self.groups.append(_Group(
                g["name"], g["label"], float(g["weight"]), bool(g.get("python_angle")), terms,
                _term_regex(raw) if terms else None,
                [re.compile(p, re.IGNORECASE) for p in g.get("patterns", [])],
                _term_regex(t.lower() for t in g["needs"]) if g.get("needs") else None,
                frozenset(t.lower() for t in g.get("python_angle_terms", []))))
        angle = set(lex["python_angle_patterns"])
        self.code_patterns = [(name, float(w), re.compile(p), name in angle)
                              for name, w, p in lex["code_patterns"]]
        self.python_errors = {e.lower(): e for e in lex["python_only_errors"]}
        self.shared_errors = {e.lower(): e for e in lex["shared_errors"]}
        self.error_regex = re.compile(r"\b([A-Za-z_]\w*(?:error|exception|warning)|StopIteration|"
                                      r"KeyboardInterrupt|SystemExit|GeneratorExit)\b", re.IGNORECASE)
        self.senses = []
        for s in lex["senses"]:
            strong = frozenset(c[1:].lower() for c in s["context"] if c.startswith("!"))
            weak = frozenset(c.lower() for c in s["context"] if not c.startswith("!"))
            self.senses.append(_Sense(s["word"], s["meaning"], s["reason"], float(s["weight"]),
                                      _term_regex(t.lower() for t in s["triggers"]),
                                      _term_regex(strong), _term_regex(weak), strong, weak,
                                      _term_regex(t.lower() for t in s.get("unless", [])),
                                      _term_regex(t.lower() for t in s.get("marked", []))))
        self.languages = [_Language(l["name"], [_Ordered(p) if isinstance(p, list) else
                                                 re.compile(p, re.IGNORECASE | re.DOTALL)
                                                 for p in l["patterns"]])
                          for l in lex["languages"]]
        fu = lex["follow_up"]
        self.fu_openers = re.compile(r"^(?:[\s,.!;:¿¡-]*" + _alternation(fu["openers"]) + r"(?=[\s,.!;:?-]|$))+",
                                     re.IGNORECASE)
        self.fu_marker = re.compile(r"^[\s,.!;:¿¡-]*" + _alternation(fu["markers"]), re.IGNORECASE)
        self.fu_clause = re.compile(r"^[\s,.!;:-]*" + _alternation(fu["clauses"]), re.IGNORECASE)
        self.fu_anaphora = _term_regex(t.lower() for t in fu["anaphora"])
        self.fu_function_words = {t.lower() for t in fu["function_words"]}
        self.fu_topics = _term_regex(t.lower() for t in fu["everyday_topics"])
        # Vocabulary that keeps a word from counting as a new topic ("and for a dict?").
        self.fu_vocab = [g.regex for g in self.groups if g.regex is not None and g.weight >= 0]
        ambiguous = next((g.terms for g in self.groups if g.name == "ambiguous"), set())
        # Words that are also everyday words: alone, they are no evidence of code.
        self.homonyms = (ambiguous | {t.lower() for s in lex["senses"] for t in s["triggers"]}
                         | set(self.head.homonyms))
        self._judge = functools.lru_cache(maxsize=512)(self._classify_one)  # history is re-read each turn
        self._rules = functools.lru_cache(maxsize=512)(self._evidence)

    # -------------------------------------------------------------------------------------------

    def classify(self, text: str, history: Sequence[str | Mapping] | None = None) -> FilterDecision:
        """Judge `text`; `history` (earlier messages, oldest first: strings, or {"role",
        "content"} dicts of which only user turns count) lets follow-ups through."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        if isinstance(history, (str, bytes)):
            raise ValueError("history must be a list of earlier messages, not a single string")
        previous = [h for h in (_user_text(h) for h in history or ()) if h and h.strip()]
        if not previous:
            return self._judge(text, True)
        # Rules first, no model call: a message they are sure is code stands on its own; one that
        # leans on a programming conversation is a follow-up, whatever the sentence model would
        # make of it alone (it reads "why?" as off-topic). Anything else is judged on its own.
        decision = self._judge(text, False)
        if decision.other_language or self._sure_code(text) or not self._is_follow_up(text, decision, previous):
            return self._judge(text, True)
        found = self._context(previous)
        if found is None:
            # It leans on a conversation that was not about programming ("I just bought a
            # guitar", then "which strings should I use?"): it is about what that was about.
            alone = self._judge(text, True)
            if not alone.is_coding:
                return alone
            reason = f'follows up on an earlier question that was not about programming ("{_quote(previous[-1])}")'
            return FilterDecision(False, min(1.0 - alone.score, 0.3), reason, evidence=alone.evidence)
        context, context_text = found
        score = max(decision.score, 0.75)
        kind = "Python" if any("Python" in e for e in context.evidence) else "programming"
        about = _topic(context)
        quoted = _quote(context_text)
        reason = f"follows up on the earlier {kind} question" + (f" about {about}" if about else "") + f' ("{quoted}")'
        return FilterDecision(True, score, reason, follow_up=True, evidence=decision.evidence)

    def _sure_code(self, text: str) -> bool:
        """Coding on the rules alone, beyond what the sentence model could overturn."""
        ev = self._rules(text)
        return not ev.language and ev.sure and ev.rules_logit > 0

    def _context(self, previous: Sequence[str]) -> tuple[FilterDecision, str] | None:
        """The programming question the latest turns follow up on: walk back over earlier
        follow-ups ("and for a dict?" then "why?"); a change of subject breaks the chain."""
        fallback = None  # a follow-up that is code by itself ("and for a dict?"), if nothing before is
        for i in range(len(previous) - 1, max(-1, len(previous) - 5), -1):
            rules = self._judge(previous[i], False)
            sure = self._sure_code(previous[i])
            if i > 0 and not rules.other_language and self._is_follow_up(previous[i], rules, previous[:i]):
                fallback = fallback or ((rules, previous[i]) if sure else None)
                continue
            if sure:
                return rules, previous[i]
            d = self._judge(previous[i], True)
            return (d, previous[i]) if d.is_coding else fallback
        return fallback

    def _is_follow_up(self, text: str, decision: FilterDecision, before: Sequence[str]) -> bool:
        """Does this message lean on the conversation ("and for a dict?", "why?", "it still
        fails") rather than ask something of its own? It must be elliptical (opens with "and",
        "what about", "what if"... and is no full question after that), referential ("it",
        "that", "an example") with little new content, or have no content of its own at all;
        and it must show no other topic: no trap sense, no other language, no everyday-topic
        word ("pancakes", "weather", "trip") unless it also has programming vocabulary.
        A complete question about something else is judged on its own, mid-conversation too."""
        if decision.other_language or any(e.startswith(("sense:", "arithmetic:", "school:", "writing:", "creative:"))
                                          for e in decision.evidence):
            return False
        if len(text) > 300:
            return False
        low = text.lower()
        covered = [m.span() for regex in self.fu_vocab for m in regex.finditer(low)]
        seen = set()
        for earlier in before:
            seen.update(_words(earlier.lower()))
        # An everyday topic ("pancakes", "a first date") is another subject, unless programming
        # vocabulary outside it says otherwise ("a list of recipes"), or the conversation was
        # already about it ("snake game", then "and make the snake faster?").
        topics = [m.span() for m in self.fu_topics.finditer(low)
                  if not all(w in seen or w.rstrip("s") in seen or w in self.fu_function_words
                             for w in _WORD_RE.findall(m.group(0)))]
        if topics and not any(all(b <= ta or a >= tb for ta, tb in topics) for a, b in covered):
            return False
        new = []
        for m in _WORD_RE.finditer(low):
            w = m.group(0).strip("'")
            if (not w or _CJK.search(w) or w in self.fu_function_words or w.rstrip("s") in self.fu_function_words
                    or w in seen or w.rstrip("s") in seen or any(a <= m.start() < b for a, b in covered)):
                continue
            new.append(w)
        if not new:
            return True  # "why?", "can you show an example", "and for a dict?"
        if len(new) > 3:
            return False  # a question of its own, whatever its opening
        if len(_WORD_RE.findall(low)) <= 2 and not self.fu_clause.match(low):
            return True  # a bare fragment: "descending?", "recursively?"
        opener = self.fu_openers.match(low)
        body = low[opener.end():] if opener else low
        marker = self.fu_marker.match(body)
        if marker and not self.fu_clause.match(body[marker.end():]):
            return True  # elliptical: "what about negative numbers?", "and for the keys?"
        return bool(self.fu_anaphora.search(low)) and len(new) <= 2  # "does it work on windows?"

    # -------------------------------------------------------------------------------------------

    def _classify_one(self, text: str, use_model: bool = True) -> FilterDecision:
        """One message on its own. The rules gather evidence (code, errors, vocabulary less the
        words a trap sense explains, the senses, another language); a trained head weighs it.
        When that leaves doubt, or the only programming words are everyday words too ("array",
        "kernel", "shell"), the sentence model reads the whole message and the head decides
        from both."""
        if not text.strip():
            return FilterDecision(False, 0.0, "the message is empty")
        ev = self._rules(text)
        items = list(ev.items)
        if ev.language:  # another language with no Python angle: decline, and say which
            return _decision(items, ev.rules_logit, ev.language)
        if ev.sure or not use_model or self.model is None or not ev.english:
            # The encoder knows English only; on other languages the rules decide alone.
            return _decision(items, ev.rules_logit, None, ev.lone)
        vectors = self.model.vectors(_clip(text))
        logit = self.model.full_logit(ev.features, vectors)
        topic = self.model.topic(vectors)
        if logit > 0:
            reading = "reads like a programming question"
        elif topic:
            reading = f"reads like a question about {topic}, not code"
        else:
            reading = "reads like an everyday question, not a programming one"
        items.append((logit - ev.rules_logit, "model", reading))
        return _decision(items, logit, None, ev.lone, model_reason=reading)

    def _evidence(self, text: str) -> "_Evidence":
        """The rules' evidence items and features, and the head's verdict on them alone."""
        text = _clip(text)
        items: list[tuple[float, str, str]] = []  # (weight, evidence key, reason)
        hits, code_item, code_angle = self._code_evidence(text)  # 1. code in the message
        errors, error_item, error_angle = self._error_evidence(text)  # 2. error names
        items += [item for item in (code_item, error_item) if item is not None]
        matched = self._vocabulary(text)  # 3. vocabulary groups
        sense_items, cancelled = self._sense_evidence(text, matched, hits, errors)  # 4. the traps
        items += sense_items
        english = is_english(text)
        group_items, group_angle = self._group_evidence(matched, cancelled, not english)
        python_angle = code_angle or error_angle or group_angle
        senses_fired = {i[1] for i in sense_items}
        language = None if python_angle else self._other_language(text, senses_fired)  # 5.
        # 6. Backing: a word that is also an everyday word ("array", "shell", "python") counts
        # only next to code, an error, a request for code, or a word that is only code.
        terms = {t for g in VOCABULARY_GROUPS for t in matched.get(g, []) if not _explained(t, cancelled)}
        lone = sorted(t for t in terms if t in self.homonyms or t.rstrip("s") in self.homonyms)
        backed = bool(code_item or error_item or any(k in ("code_intent", "code_request") for _, k, _ in group_items))
        # The sentence model reads English only, so in another language no word waits for it:
        # the head weighs the vocabulary as it is ("posortować listę słowników").
        if backed or len(terms) > len(lone) or not english:
            lone = []
        features = dict.fromkeys(self.head.features, 0.0)
        for w, key, _ in items + group_items:
            name = key if key in features else ("sense" if key.startswith("sense:") else key)
            if name in VOCABULARY_GROUPS and lone:
                name = "lone"
            if name in features:
                features[name] += w
        features.update(english=float(english), n_terms=float(len(terms)),
                        lone_terms=float(len(lone)), no_evidence=float(not items and not group_items))
        items += [(0.0 if lone and k in VOCABULARY_GROUPS else w, k, r) for w, k, r in group_items]
        rules_logit = self.head.rules_logit(features)
        # Sure: the head is confident on the rules' evidence, and that evidence is real (not a
        # lone everyday word, not the mere absence of evidence).
        sure = abs(rules_logit) >= self.head.band and not lone and bool(items)
        return _Evidence(tuple(items), features, rules_logit, sure, language, tuple(lone),
                         features["english"] > 0)

    def _code_evidence(self, text: str) -> tuple[list, tuple | None, bool]:
        """(the code patterns found, their evidence item or None, whether any is Python's)."""
        hits, python_angle = [], False
        for name, weight, regex, angle in self.code_patterns:
            m = regex.search(text)
            if m:
                hits.append((weight, name, m.group(0).strip()[:30]))
                python_angle |= angle
        if not hits:
            return hits, None, python_angle
        hits.sort(reverse=True)
        total = min(hits[0][0] + 1.0 * (len(hits) - 1), 8.0)
        shown = ", ".join(h[2] for h in hits[:2])
        what = "Python code" if python_angle else "code"
        return hits, (total, "code", f"contains {what} ({shown})"), python_angle

    def _error_evidence(self, text: str) -> tuple[list[str], tuple | None, bool]:
        """(the error names, their evidence item or None, whether they are Python's). KeyError
        is Python's; TypeError could be JavaScript's too."""
        errors = [m.group(1) for m in self.error_regex.finditer(text)]
        py_errs = [self.python_errors[e.lower()] for e in errors if e.lower() in self.python_errors]
        other_errs = [e for e in errors if e.lower() not in self.python_errors and
                      (e.lower() in self.shared_errors or re.match(r"[A-Z]\w*[a-z][A-Z]", e))]
        if "traceback (most recent call last)" in text.lower():
            named = py_errs or other_errs
            return errors, (6.0, "traceback", "contains a Python traceback"
                            + (f" ({named[0]})" if named else "")), True
        if py_errs:
            return errors, (4.5, "error", f"mentions a Python error ({py_errs[0]})"), True
        if other_errs:
            return errors, (3.0, "error", f"mentions an error ({other_errs[0]})"), False
        return errors, None, False

    def _vocabulary(self, text: str) -> dict[str, list[str]]:
        """The terms (and pattern matches) of each vocabulary group found in text."""
        matched: dict[str, list[str]] = {}
        for g in self.groups:
            if g.needs is not None and not g.needs.search(text):
                continue
            found = []
            if g.regex is not None:
                found = list(dict.fromkeys(_canonical(m.group(0), g.terms)
                                           for m in g.regex.finditer(text)))
            pattern_hit = next((p.search(text) for p in g.patterns if p.search(text)), None)
            if pattern_hit:
                found.append(" ".join(pattern_hit.group(0).split())[:40])
            if found:
                matched[g.name] = found
        return matched

    def _sense_evidence(self, text: str, matched: dict[str, list[str]], hits: list,
                        errors: list[str]) -> tuple[list[tuple], set[str]]:
        """Word senses (the traps): (their evidence items, the trigger words they explain). A
        sense cancels its trigger word's evidence; senses of one word count once."""
        cancelled: set[str] = set()
        sense_items = []
        for s in self.senses:
            trig = [m.group(0).lower() for m in s.triggers.finditer(text)]
            if not trig:
                continue
            strong = [_canonical(m.group(0), s.strong_terms) for m in s.strong.finditer(text)]
            weak = [_canonical(m.group(0), s.weak_terms) for m in s.weak.finditer(text)]
            # Context words that are also the trigger do not count ("python" is no context).
            trig_set = {" ".join(t.split()) for t in trig}
            strong = [c for c in dict.fromkeys(strong) if c not in trig_set]
            weak = [c for c in dict.fromkeys(weak) if c not in trig_set]
            # "a python", "pythons": people rarely write of the language so; weak evidence.
            weak += [" ".join(m.group(0).lower().split()) for m in s.marked.finditer(text)]
            if s.unless.search(text):
                continue
            code = self._clearly_code(matched, hits, errors, s)
            if strong or (weak and not code):
                ctx = ", ".join((strong + weak)[:3])
                reason = s.reason.format(word=trig[0], meaning=s.meaning, context=ctx)
                # With other evidence of code ("my python class at school"), the sense only
                # takes back its own word's evidence and a little more; alone, it decides.
                sense_items.append((max(s.weight, -1.5) if code else s.weight, f"sense:{s.word}", reason))
                words = {w for t in trig_set for w in t.split()}  # "ball pythons" explains "python"
                cancelled |= trig_set | words | {w.rstrip("s") for w in trig_set | words}
        # Senses of the same word (python: snake / Monty Python) count once.
        items, seen_words = [], set()
        for item in sorted(sense_items):
            w = item[1].lower()
            if w not in seen_words:
                items.append(item)
                seen_words.add(w)
        return items, cancelled

    def _group_evidence(self, matched: dict[str, list[str]], cancelled: set[str],
                        not_english: bool = False) -> tuple[list[tuple], bool]:
        """(an evidence item per vocabulary group with terms left after the senses, whether
        any of those groups gives the message a Python angle)."""
        items, python_angle = [], False
        for g in self.groups:
            # In another language, where the rules decide alone, a request ("comment faire une
            # boucle") built on a word a sense explained (the loop of a ribbon) is no request for
            # code either. (In English the sentence model reads such a message.)
            loose = not_english and g.name in ("code_intent", "code_request")
            found = [t for t in matched.get(g.name, [])
                     if not (_holds(t, cancelled) if loose else _explained(t, cancelled))]
            if not found:
                continue
            python_angle |= g.python_angle or not g.angle_terms.isdisjoint(found)
            if g.weight == 0:
                continue  # context only (language_talk): it steers word senses, adds no score
            total = min(g.weight + 1.0 * (len(found) - 1), GROUP_CAP.get(g.name, g.weight))
            items.append((total, g.name, f"{g.label} ({', '.join(found[:3])})"))
        return items, python_angle

    def _clearly_code(self, matched, hits, errors, sense: _Sense) -> bool:
        """Is there evidence of code besides the sense's own trigger words?"""
        if hits or errors:
            return True
        for name in STRONG_GROUPS + ("python",):
            # A lexicon term counts unless it is the trigger itself ("pandas dataframe" counts
            # for pandas); a matched request ("how to get my class to...") unless it holds it.
            loose = name in ("code_intent", "code_request")
            terms = [t for t in matched.get(name, [])
                     if not (sense.triggers.search(t) if loose else _is_word(sense.triggers, t))]
            if terms:
                return True
        return False

    def _other_language(self, text: str, senses_fired: set[str]) -> str | None:
        for lang in self.languages:
            if lang.name == "Java" and "sense:Java" in senses_fired:
                continue
            if any(p.search(text) for p in lang.patterns):
                return lang.name
        return None



def _decision(items: list[tuple[float, str, str]], logit: float, language: str | None,
              lone: Sequence[str] = (), model_reason: str = "") -> FilterDecision:
    """The verdict from the evidence items and their logit: the strongest items first as
    evidence, the reason from the side that won, in plain words."""
    score = _sigmoid(logit)
    items.sort(key=lambda i: -abs(i[0]))
    evidence = tuple(f"{key}: {reason}" for _, key, reason in items)
    if language:
        return FilterDecision(False, min(score, 0.2), f"asks about {language}, not Python",
                              other_language=language, evidence=evidence)
    words = ", ".join(f"'{w}'" for w in lone[:3])
    if logit > 0:
        positive = [r for w, k, r in items if (w > 0 or k in VOCABULARY_GROUPS) and k != "model"]
        reason = "; ".join(([model_reason] if model_reason else []) + positive[:2 if not model_reason else 1])
        return FilterDecision(True, score, reason or "reads like a programming question", evidence=evidence)
    negative = [r for w, k, r in items if w < 0 and k != "model"]
    if negative:  # a trap sense, a request for writing...: the most specific reason
        reason = negative[0]
    elif model_reason and lone:
        also = "is also an everyday word" if len(lone) == 1 else "are also everyday words"
        reason = f"{model_reason} ({words} {also})"
    elif model_reason:
        reason = model_reason
    elif lone:
        reason = f"{words} alone {'is' if len(lone) == 1 else 'are'} not enough: no code, error or other programming word"
    elif items:
        reason = f"too little programming evidence ({items[0][2]})"
    else:
        reason = "no sign of a programming question"
    return FilterDecision(False, score, reason, evidence=evidence)


@dataclass(frozen=True)
class _Evidence:
    items: tuple  # (weight, key, reason) per piece of evidence
    features: dict  # what the head reads (per-group weights, lone everyday words, ...)
    rules_logit: float  # the head's verdict on the rules' evidence alone
    sure: bool  # confident enough that the sentence model is not asked
    language: str | None  # another programming language, when the message is about one
    lone: tuple  # everyday words that are the only programming vocabulary ("array")
    english: bool


def _quote(text: str) -> str:
    quoted = text.strip().replace("\n", " ")
    return quoted if len(quoted) <= 60 else quoted[:57] + "..."


def _clip(text: str) -> str:
    """Longer pastes are judged on their first and last 10k characters."""
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS // 2] + "\n" + text[-MAX_CHARS // 2:]


def _is_word(triggers: re.Pattern, term: str) -> bool:
    """Is this matched term just the trigger word (an inflected form counts: "питоном")?"""
    hit = triggers.match(term)
    return bool(hit) and (hit.end() == len(term) or " " not in term)


_CYRILLIC = re.compile(r"[\u0400-\u04FF]")
_WORD_RE = re.compile(r"[^\W\d_](?:[^\W\d_]|'(?=[^\W\d_]))*")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def _words(text: str) -> set[str]:
    words = {m.group(0) for m in _WORD_RE.finditer(text)}
    return words | {w.rstrip("s") for w in words}


def _alternation(phrases: Iterable[str]) -> str:
    """Phrases as one regex group, longest first; a Latin or Cyrillic phrase must end a word."""
    parts = []
    for p in sorted({p.lower() for p in phrases}, key=len, reverse=True):
        body = r"\s+".join(re.escape(w) for w in p.split())
        parts.append(body if _CJK.search(p) else body + rf"(?![{_WORD}'])")
    return "(?:" + "|".join(parts) + ")"


def _topic(decision: FilterDecision) -> str:
    """What an earlier question was about, from its evidence: "dict", "KeyError", "pandas"."""
    order = ("traceback", "error", "python_tool", "python_concept", "programming", "data_words",
             "code", "ambiguous", "python")
    found = {}
    for e in decision.evidence:
        key, _, reason = e.partition(": ")
        m = re.search(r"\(([^()]+)\)\s*$", reason)
        if m and key in order and key not in found:
            found[key] = m.group(1)
    return next((found[k] for k in order if k in found), "")


def _user_text(turn) -> str:
    if isinstance(turn, str):
        return turn
    if isinstance(turn, Mapping):
        return turn.get("content", "") if turn.get("role", "user") == "user" else ""
    raise ValueError(f"history entries must be strings or {{'role', 'content'}} dicts, got {type(turn).__name__}")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))


@functools.lru_cache(maxsize=4)
def _load_lexicon(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the code filter's lexicon ({e})") from None


@functools.lru_cache(maxsize=1)
def default_filter() -> CodeQuestionFilter:
    """A shared instance (building one compiles a few hundred regexes: ~50 ms)."""
    return CodeQuestionFilter()
