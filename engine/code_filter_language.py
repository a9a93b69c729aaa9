"""Is a chat message English? The code filter's sentence model (all-MiniLM-L6-v2) reads English
only, so a message in another language is decided on the rules' evidence alone. A cheap check:
another script, a function word of another language, or two weak signs (a function word that is
also an English word or name, a letter English does not use)."""

from __future__ import annotations

import re

# Function words of the other languages the lexicon covers, never English words or code.
_FOREIGN = set("""como cómo qué una los las por para con está pourquoi avec dans je une les des quoi
c'est qu'est est-ce wie ich ist und mit eine einen mein meine warum nicht uma meu minha não porque
posso perché sono della
się czy mój moja moje dlaczego jaki jaka żeby
een mijn waarom niet hoeveel
nasıl için neden nedir değil bunu
faccio questo questa nella quale
bagaimana saya dengan tidak
varför
proč""".split())
# Function words that are also English words or names ("a garden hoe", "ik" for inverse
# kinematics): one of them alone is not enough; two of these, or one with a letter English
# does not use ("jak zrobić", "hoe tel ik", "hur gör jag"), is.
_FOREIGN_WEAK = set("jak hoe ik het ile mio gli nel hur inte jag".split())
# Scripts the English sentence model cannot read: Cyrillic, Greek, Hebrew, Arabic, Devanagari,
# Thai, Japanese, Chinese, Korean (Greek as a word: a lone "λ" or "Σ" is maths in English).
_NON_LATIN = re.compile(r"[\u0400-\u04FF\u0590-\u05FF\u0600-\u06FF\u0900-\u097F\u0E00-\u0E7F"
                        r"\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[\u0370-\u03FF]{3}")


def is_english(text: str) -> bool:
    if _NON_LATIN.search(text):
        return False
    words = re.findall(r"[a-zà-ÿ\u0100-\u024f']+", text.lower())
    if any(w in _FOREIGN for w in words):
        return False
    weak = len({w for w in words if w in _FOREIGN_WEAK})
    return weak + bool(re.search(r"[à-ÿ\u0100-\u024f]", text.lower())) < 2
