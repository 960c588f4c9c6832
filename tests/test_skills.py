"""The generated `skills` set: every answer re-derived from the row text by independent code,
determinism, sizes, balance, source options, and loading through prepare_data and `data inspect`."""

from __future__ import annotations

import calendar
import io
import json
import math
import re
import string
import time
from collections import Counter
from datetime import date, timedelta
from fractions import Fraction
from importlib.resources import files

import pytest

from adaptive_lora.cli import main
from adaptive_lora.config import DataConfig
from adaptive_lora.data import IGNORE, load_records, prepare_data
from adaptive_lora.data.skills import CATEGORIES, DIFFICULTIES, FAMILIES, LEVELS, generate_skills
from adaptive_lora.errors import UserError

INTEGER = re.compile(r"-?\d+")


def text_of(row: dict) -> str:
    return f"{row['instruction']}\n{row['input']}"


def integers(text: str) -> list[int]:
    return [int(x) for x in INTEGER.findall(text)]


# ---------------------------------------------------------------- independent solvers, one per family


def solve_addition(row):
    (a, b) = integers(text_of(row))
    return sum((a, b))


def solve_subtraction(row):
    text = text_of(row)
    if match := re.search(r"Subtract (\d+) from (\d+)", text):
        return int(match[2]) - int(match[1])
    match = re.search(r"(\d+) (?:-|minus) (\d+)", text)
    return int(match[1]) - int(match[2])


def solve_multiplication(row):
    numbers = integers(text_of(row))
    assert len(numbers) == 2
    return math.prod(numbers)


def solve_sort_words(row):
    return ", ".join(sorted(row["input"].split(", ")))


def solve_reverse_string(row):
    assert row["input"].isalpha()
    return row["input"][::-1]


def solve_count_items(row):
    (kind,) = [k for k in CATEGORIES if re.search(rf"\b{k}\b", row["instruction"])]
    counts = Counter(row["input"].split(", "))
    return sum(n for item, n in counts.items() if item in set(CATEGORIES[kind]))


UNIT_SIZE = {  # in meters, grams, liters, seconds and months
    "millimeter": Fraction(1, 1000),
    "centimeter": Fraction(1, 100),
    "meter": 1,
    "kilometer": 1000,
    "gram": 1,
    "kilogram": 1000,
    "milliliter": Fraction(1, 1000),
    "liter": 1,
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 1,
    "year": 12,
}
UNIT = "|".join(UNIT_SIZE)


def solve_unit_conversion(row):
    text = row["instruction"]
    value, source = re.search(rf"(\d+) ({UNIT})s?\b", text).groups()
    (target,) = {m[1] for m in re.finditer(rf"\b({UNIT})s?\b", text)} - {source}
    result = int(value) * Fraction(UNIT_SIZE[source]) / UNIT_SIZE[target]
    assert result.denominator == 1
    return int(result)


def solve_weekday(row):
    text = row["instruction"]
    names = list(calendar.day_name)
    (day,) = [name for name in names if name in text]
    (days,) = integers(text)
    back = bool(re.search(r"\b(before|ago|back)\b", text))
    assert back != bool(re.search(r"\b(after|forward|will)\b", text))
    start = date(2024, 1, 1) + timedelta(days=names.index(day))  # 2024-01-01 was a Monday
    assert start.strftime("%A") == day
    return (start - timedelta(days=days) if back else start + timedelta(days=days)).strftime("%A")


def solve_json_field(row):
    (path,) = re.findall(r'"([\w.]+)"', row["instruction"])
    value = json.loads(row["input"])
    for key in path.split("."):
        value = value[key]
    assert not isinstance(value, dict)
    return value


def solve_caesar_shift(row):
    (shift,) = set(integers(row["instruction"]))
    letters = string.ascii_lowercase
    return row["input"].translate(str.maketrans(letters, letters[shift:] + letters[:shift]))


def solve_max_min(row):
    numbers = [int(x) for x in row["input"].split(", ")]
    largest = bool(re.search(r"\b(largest|highest|maximum)\b", row["instruction"]))
    assert largest != bool(re.search(r"\b(smallest|lowest|minimum)\b", row["instruction"]))
    return max(numbers) if largest else min(numbers)


SOLVERS = {name.removeprefix("solve_"): solver for name, solver in globals().items() if name.startswith("solve_")}


def test_every_family_has_a_solver_and_difficulty_levels():
    assert len(FAMILIES) >= 8 and set(SOLVERS) == set(FAMILIES)
    assert DIFFICULTIES == (1, 2, 3) and all(set(LEVELS[f]) == set(DIFFICULTIES) for f in FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_answers_rederived_from_the_text(family):
    rows = generate_skills(n_rows=300, seed=11, families=[family])
    assert Counter(r["difficulty"] for r in rows) == {1: 100, 2: 100, 3: 100}
    for row in rows:
        assert (row["task"], row["verifiable"]) == (family, True)
        assert str(SOLVERS[family](row)) == row["output"], row
        assert re.search(r"\b(only|just|alone|nothing else)\b", row["instruction"]), row["instruction"]
        assert row["output"].strip() == row["output"] and "\n" not in row["output"] and len(row["output"]) <= 60


def test_difficulty_makes_the_task_bigger():
    rows = generate_skills(n_rows=330, seed=2)
    by_cell = {}
    for row in rows:
        # the problem's content, not its phrasing: the input, the answer and the digits in the instruction
        content = len(row["input"]) + len(row["output"]) + sum(c.isdigit() for c in row["instruction"])
        by_cell.setdefault((row["task"], row["difficulty"]), []).append(content)
    for family in FAMILIES:
        sizes = [sum(by_cell[family, level]) / len(by_cell[family, level]) for level in DIFFICULTIES]
        assert sizes[0] < sizes[2], (family, sizes)


def test_categories_are_disjoint():
    words = [w for items in CATEGORIES.values() for w in items]
    assert len(words) == len(set(words))


# ---------------------------------------------------------------- determinism, sizes, balance


def test_same_seed_same_rows_other_seed_other_rows():
    first = generate_skills(n_rows=220, seed=5)
    assert first == generate_skills(n_rows=220, seed=5)
    other = generate_skills(n_rows=220, seed=6)
    assert sum(a != b for a, b in zip(first, other)) > 200
    assert [(r["task"], r["difficulty"]) for r in first] == [(r["task"], r["difficulty"]) for r in other]


def test_sizes_are_nested_balanced_and_prompts_unique():
    start = time.perf_counter()
    rows = generate_skills()
    assert time.perf_counter() - start < 1.0
    assert len(rows) == 2000 and generate_skills(n_rows=500) == rows[:500]
    assert len({(r["instruction"], r["input"]) for r in rows}) == 2000  # no prompt twice: no train/test leak
    for n in (1, 7, 100, 2000):
        cells = Counter((r["task"], r["difficulty"]) for r in rows[:n])
        assert sum(cells.values()) == n and max(cells.values()) - min(cells.values()) <= 1
    assert len(Counter((r["task"], r["difficulty"]) for r in rows)) == len(FAMILIES) * 3
    some = generate_skills(n_rows=40, families=["weekday", "max_min"], difficulties=[2, 3])
    assert Counter((r["task"], r["difficulty"]) for r in some) == {(f, d): 10 for f in ("weekday", "max_min") for d in (2, 3)}


def test_a_cell_too_small_for_the_request_is_a_user_error(monkeypatch):
    monkeypatch.setitem(LEVELS["weekday"], 1, {"days": range(1, 2)})  # only 7 distinct questions
    assert len(generate_skills(n_rows=7, families=["weekday"], difficulties=[1])) == 7
    with pytest.raises(UserError, match=r"'weekday' at difficulty 1 has too few distinct questions for 8 rows"):
        generate_skills(n_rows=8, families=["weekday"], difficulties=[1])


# ---------------------------------------------------------------- as a data source


def test_source_default_and_options():
    records, report = load_records("skills")
    assert (report.source_kind, report.rows_read, report.rows_kept, report.dropped) == ("skills", 2000, 2000, {})
    expected = generate_skills()
    assert [r["output"] for r in records] == [r["output"] for r in expected]
    assert records[0]["meta"] == {"task": expected[0]["task"], "difficulty": expected[0]["difficulty"], "verifiable": True}
    assert len(load_records("skills:500")[0]) == 500
    records, _ = load_records("skills:n=60,seed=3,families=weekday+caesar_shift,difficulties=2")
    assert len(records) == 60 and {(r["meta"]["task"], r["meta"]["difficulty"]) for r in records} == {
        ("weekday", 2),
        ("caesar_shift", 2),
    }
    assert [r["output"] for r in records] == [
        r["output"] for r in generate_skills(60, seed=3, families=["weekday", "caesar_shift"], difficulties=[2])
    ]


@pytest.mark.parametrize(
    "source, message",
    [
        ("skills:n=0", r"number of rows must be a whole number >= 1"),
        ("skills:size=5", r"unknown option 'size'; use n, seed, families, difficulties"),
        ("skills:n=5,seed", r"option 'seed' is not KEY=VALUE"),
        ("skills:families=addition+poetry", r"unknown family 'poetry'; families are addition, "),
        ("skills:difficulties=4", r"difficulties must be among 1, 2, 3"),
        ("skills:seed=x", r"seed must be a whole number"),
    ],
)
def test_bad_source_options_are_one_line_errors(source, message):
    with pytest.raises(UserError, match=message) as err:
        load_records(source)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def tiny_tok(tiny_llama_dir):
    from adaptive_lora.models import load_tokenizer

    return load_tokenizer(str(tiny_llama_dir))


@pytest.mark.parametrize("fmt", ["alpaca", "chat", "seed"])
def test_prepare_data_in_every_prompt_format(tiny_tok, fmt):
    data = prepare_data(DataConfig(source="skills:330", prompt_format=fmt, val_set_size=33, test_set_size=33), tiny_tok, 256)
    report = data.report
    assert (report.n_train, report.n_eval, report.n_test, report.n_dropped, report.truncated) == (264, 33, 33, 0, 0)
    assert all(r["meta"]["verifiable"] for r in data.train_records + data.eval_records + data.test_records)
    for record, example in zip(data.test_records, data.test):
        supervised = [token for token, label in zip(example["input_ids"], example["labels"]) if label != IGNORE]
        text = tiny_tok.decode(supervised, skip_special_tokens=True)
        assert text.strip() == record["output"]  # the loss is on the answer only


def test_datasheet_describes_every_family():
    sheet = (files("adaptive_lora") / "resources" / "skills.md").read_text(encoding="utf-8")
    for family in FAMILIES:
        assert f"`{family}`" in sheet
    assert "skills:n=500,seed=3" in sheet


def test_cli_inspect_reports_families_difficulties_and_verifiable(tiny_llama_dir, capsys):
    from adaptive_lora.cli.data import print_summary

    assert main(["data", "inspect", "skills:n=66,families=weekday+addition", "--model", str(tiny_llama_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source_kind"] == "skills" and summary["rows_kept"] == 66
    assert summary["tasks"] == {"addition": 33, "weekday": 33}
    assert summary["difficulties"] == {"1": 22, "2": 22, "3": 22} and summary["verifiable"] == 66
    text = io.StringIO()
    print_summary(summary, file=text)  # what the command prints without --json
    lines = text.getvalue().splitlines()
    assert "tasks (2): addition 33, weekday 33" in lines and "difficulty: 1: 22, 2: 22, 3: 22" in lines
    assert "verifiable (exact match applies): 66 of 66 kept rows" in lines
