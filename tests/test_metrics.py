"""Answer metrics: the exact-match normalisation (both directions) and ROUGE-L from rouge-score."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adaptive_lora.evaluation import metrics
from adaptive_lora.evaluation.metrics import exact_match, mean_or_none, normalize_answer, rouge_l

# (text, its normal form)
NORMAL_FORMS = [
    ("  42  ", "42"),
    ("42.", "42"),
    ("Paris", "paris"),
    ("The answer is 42.", "42"),
    ("the answer is: 42", "42"),
    ("Answer: yes", "yes"),
    ("Final answer: 7", "7"),
    ('"yes"', "yes"),
    ("'blue'", "blue"),
    ("`x = 3`", "x = 3"),
    ("\u201cquoted\u201d", "quoted"),
    ('"hello".', "hello"),
    ('Answer: "hello."', "hello"),
    ("a   b\tc", "a b c"),
    ("1,000", "1000"),
    ("12,345,678", "12345678"),
    ("1,000.5", "1000.5"),
    ("42.0", "42"),
    ("7.000", "7"),
    ("\u22125", "-5"),
    ("42\nBecause 40 + 2 = 42.", "42"),
    ("\n\n  apple  \nbanana", "apple"),
    # left alone: these differ in content, not form
    ("3.10", "3.10"),
    ("1.0.2", "1.0.2"),
    ("1,2", "1,2"),
    ("12,34", "12,34"),
    ("1,0000", "1,0000"),
    ("'tis", "'tis"),
    ('"open', '"open'),
    ("...", "..."),
    ("the cat", "the cat"),
    ("answers: 4", "answers: 4"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), NORMAL_FORMS)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


# (prediction, reference, counts as a match?)
MATCHES = [
    ("42", "42", True),
    ("The answer is 42.", "42", True),
    (" 1,000 ", "1000", True),
    ("1000.0", "1,000", True),
    ("`olleh`", "olleh", True),
    ("Tuesday.\nIt is 3 days later.", "Tuesday", True),
    ("a\nb", "a\nb", True),
    # a wrong answer stays wrong
    ("43", "42", False),
    ("-5", "5", False),
    ("4.2", "42", False),
    ("3.1", "3.10", False),
    ("1,2", "12", False),
    ("12", "1,2", False),
    ("a b", "ab", False),
    ("apple banana", "banana apple", False),
    ("Tuesday or Wednesday", "Tuesday", False),
    ("a", "a\nb", False),  # a multi-line reference must match in full
    ("a\nc", "a\nb", False),
    ("", "42", False),
    ("", "", False),  # an empty reference never matches
    (None, "42", False),
]


@pytest.mark.parametrize(("prediction", "reference", "expected"), MATCHES)
def test_exact_match(prediction, reference, expected):
    assert exact_match(prediction, reference) is expected
    if prediction and "\n" not in prediction + reference:  # symmetric for one-line answers
        assert exact_match(reference, prediction) is expected


def test_rouge_l_known_pairs():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l("dogs bark loudly", "the cat sat") == 0.0
    # LCS "the cat on the mat" = 5 of 6 tokens on each side: P = R = F = 5/6
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # LCS "the cat" = 2: P = 2/2, R = 2/3, F = 2PR / (P + R) = 0.8
    assert rouge_l("the cat", "the cat sat") == pytest.approx(0.8)
    assert rouge_l("The CAT, sat!", "the cat sat") == pytest.approx(1.0)  # rouge-score lowercases and drops punctuation
    assert rouge_l("", "the cat") == 0.0
    assert rouge_l("   ", "the cat") == 0.0
    assert rouge_l(None, "the cat") == 0.0


def test_mean_or_none_never_nan():
    assert mean_or_none([]) is None
    assert mean_or_none([True, False, True, True]) == pytest.approx(0.75)
    assert mean_or_none([0.5, 1.0]) == pytest.approx(0.75)


def test_metrics_module_does_not_import_torch():
    # Loaded by path: importing it through the package would run adaptive_lora/__init__ (which imports torch).
    code = (
        "import importlib.util as u, sys; spec = u.spec_from_file_location('metrics', sys.argv[1]); "
        "m = u.module_from_spec(spec); spec.loader.exec_module(m); assert m.exact_match('1,000.', '1000'); "
        "print('torch' in sys.modules, 'nltk' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, metrics.__file__], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]  # nor rouge-score's nltk before ROUGE-L is asked for
