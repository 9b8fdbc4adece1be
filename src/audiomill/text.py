"""Text for TTS training: cleaning, normalisation per language, SentencePiece ids, the train/val split.

- :func:`clean`: as IndexTTS2's preprocessing cleans a transcript: strip, U+3000 and U+00A0 to
  spaces, a leading ``speaker N:`` or ``spk N:`` removed.
- :func:`normalise`: Unicode NFC, typographic punctuation to its plain form (curly quotes, dashes,
  the ellipsis, full-width ASCII), runs of white space to one space; for English (``en``, ``en-*``)
  numbers as words (``23`` -> ``twenty-three``, ``3.5`` -> ``three point five``, ``1st`` -> ``first``,
  ``50%`` -> ``fifty percent``, ``$5`` -> ``five dollars``). Other scripts keep their own punctuation
  (Ge'ez ``።`` stays: a tokenizer trained on it expects it).
- :func:`is_validation`: IndexTTS2's split rule, ``int(sha1(id), 16) % 1_000_000 / 1e6 < ratio``.
- :func:`train_tokenizer`: a BPE or unigram SentencePiece model from texts, normalised the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
from collections.abc import Iterable

SPEAKER = re.compile(r"^\s*(?:speaker|spk)\s*\d+\s*[:：]\s*", re.IGNORECASE)
PUNCTUATION = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"',
               "\u201e": '"', "\u00ab": '"', "\u00bb": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-",
               "\u2026": "...", "\u3001": ",", "\u3002": "."}


def clean(text: str) -> str:
    text = text.strip().replace("\u3000", " ").replace("\xa0", " ")
    return SPEAKER.sub("", text).strip()


def normalise(text: str, language: str | None = None) -> str:
    text = unicodedata.normalize("NFC", clean(text))
    text = "".join(PUNCTUATION.get(char, _half_width(char)) for char in text)
    if language and (language == "en" or language.startswith("en-") or language.startswith("en_")):
        text = english_numbers(text)
    return " ".join(text.split())


def _half_width(char: str) -> str:
    """Full-width ASCII (U+FF01..U+FF5E) as ASCII; anything else as it is."""
    code = ord(char)
    return chr(code - 0xFEE0) if 0xFF01 <= code <= 0xFF5E else char


# -- English numbers ----------------------------------------------------------------------------------

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
           "twelve": "twelfth"}
NUMBER = re.compile(r"(?<![\w.])(?P<money>\$)?(?P<sign>-)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
                    r"(?P<ord>st|nd|rd|th)?(?P<pct>%)?(?![\w.]\d)")


def number_words(number: int) -> str:
    """``number`` (>= 0) in English words: 23 -> twenty-three, 1905 -> one thousand nine hundred five."""
    if number < 20:
        return ONES[number]
    if number < 100:
        return TENS[number // 10] + ("-" + ONES[number % 10] if number % 10 else "")
    if number < 1000:
        rest = number % 100
        return ONES[number // 100] + " hundred" + (" " + number_words(rest) if rest else "")
    for size, name in SCALES:
        if number >= size:
            head, rest = divmod(number, size)
            return number_words(head) + " " + name + (" " + number_words(rest) if rest else "")
    raise AssertionError(number)


def ordinal_words(number: int) -> str:
    words = number_words(number)
    head, sep, last = words.rpartition("-") if "-" in words.split(" ")[-1] else words.rpartition(" ")
    if last in ORDINAL:
        last = ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def english_numbers(text: str) -> str:
    def spoken(match: re.Match) -> str:
        whole = match.group("int").replace(",", "")
        if len(whole) > 15:  # an identifier, not an amount: digit by digit
            return " ".join(ONES[int(d)] for d in whole)
        value = int(whole)
        if match.group("ord") and not match.group("frac"):
            words = ordinal_words(value)
        else:
            words = number_words(value)
            if match.group("frac"):
                words += " point " + " ".join(ONES[int(d)] for d in match.group("frac"))
            if match.group("ord"):
                words += " " + match.group("ord")
        if match.group("sign"):
            words = "minus " + words
        if match.group("pct"):
            words += " percent"
        if match.group("money"):
            words += " dollar" + ("" if value == 1 and not match.group("frac") else "s")
        return words

    return NUMBER.sub(spoken, text)


# -- the split -------------------------------------------------------------------------------------------


def split_value(key: str) -> float:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 1_000_000 / 1_000_000


def is_validation(key: str, ratio: float) -> bool:
    """IndexTTS2's rule: the id's SHA-1 as a number, modulo a million, as a share below ``ratio``."""
    if ratio <= 0.0:
        return False
    if ratio >= 1.0:
        return True
    return split_value(key) < ratio


# -- SentencePiece ----------------------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], out: str, vocab_size: int, model_type: str = "bpe",
                    character_coverage: float = 1.0, language: str | None = None) -> dict[str, int]:
    """Train a SentencePiece model on ``texts`` (cleaned and normalised first) into ``out`` (a ``.model``
    file, written whole and renamed into place); returns the counts of lines used and skipped."""
    import sentencepiece

    counts = {"lines": 0, "empty": 0}

    def lines():
        for text in texts:
            normal = normalise(text, language)
            if normal:
                counts["lines"] += 1
                yield normal
            else:
                counts["empty"] += 1

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=lines(), model_writer=model, vocab_size=vocab_size,
                                             model_type=model_type, character_coverage=character_coverage,
                                             minloglevel=2, num_threads=os.cpu_count() or 1)
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(model.getvalue())
    os.replace(tmp, out)
    return counts


def manifest_texts(paths: list[str], counts: dict[str, int]) -> Iterable[str]:
    """The ``text`` of every line of JSONL manifests (a line that is not a JSON object, or has no text,
    is counted in ``counts["bad"]`` and skipped)."""
    import json

    counts.setdefault("bad", 0)
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    counts["bad"] += 1
                    continue
                yield row["text"]
