"""Answer metrics (torch-free): exact match after a conservative normalisation, and ROUGE-L F1.

`normalize_answer` only removes differences of form, never of content. In order, it:
  1. keeps the first non-empty line (a model often goes on after its answer), unless told not to;
  2. maps the Unicode minus sign to "-" and lowercases;
  3. repeatedly strips surrounding whitespace, a leading "the answer is" / "answer:" / "final answer:",
     one trailing period, and one pair of matching surrounding quotes or backticks ("x", 'x', `x`, “x”);
  4. collapses runs of whitespace to one space;
  5. writes numbers plainly: thousands separators go ("1,000" -> "1000", only for well-formed groups of
     three), and an all-zero fraction goes ("42.0" -> "42"; "3.10" and "1.0.2" are left alone).
`exact_match` applies the first-line rule only when the reference itself is one line, so a multi-line
answer must match in full. Nothing here rounds, stems, drops articles or words, or reorders.
"""

from __future__ import annotations

import functools
import re

_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:)\s*")
_QUOTES = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019"}
_THOUSANDS = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,])")
_ZERO_FRACTION = re.compile(r"(?<![\d.])(\d+)\.0+(?![\d.])")


def first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def normalize_answer(text: str | None, first_line_only: bool = True) -> str:
    """The form of an answer that exact match compares (rules in the module docstring)."""
    text = "" if text is None else str(text)
    if first_line_only:
        text = first_line(text)
    text = text.replace("\u2212", "-").lower()
    previous = None
    while text != previous:
        previous = text
        text = _PREFIX.sub("", text.strip()).strip()
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1].rstrip()
        if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
            text = text[1:-1]
    text = " ".join(text.split())
    text = _THOUSANDS.sub(lambda match: match.group(0).replace(",", ""), text)
    return _ZERO_FRACTION.sub(r"\1", text)


def exact_match(prediction: str | None, reference: str) -> bool:
    """Whether the normalised prediction equals the normalised reference (an empty reference never matches)."""
    one_line = len([line for line in str(reference).splitlines() if line.strip()]) <= 1
    expected = normalize_answer(reference, first_line_only=one_line)
    return bool(expected) and normalize_answer(prediction, first_line_only=one_line) == expected


@functools.cache
def _rouge_scorer():
    # Imported on first use: rouge-score imports nltk, which imports scipy.stats (seconds at start-up).
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(prediction: str | None, reference: str) -> float:
    """ROUGE-L F1 (rouge-score's RougeScorer, no stemming); 0.0 for an empty prediction.

    rouge-score tokenises on lowercase ASCII letters and digits, so text with none of them scores 0.0.
    """
    if not prediction or not prediction.strip():
        return 0.0
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def mean_or_none(values: list) -> float | None:
    """Mean of the values (bools count as 0/1), or None when there are none: never NaN."""
    return sum(float(v) for v in values) / len(values) if values else None
