"""`skills`: a procedurally generated, verifiable instruction set (datasheet: resources/skills.md).

Every row is a small task whose answer is computed by code and is short and exactly checkable (a
number, a word, a short string), so exact match is a fair metric. Rows carry `task` (the family),
`difficulty` (1..3) and `verifiable: true`. Generation is seeded and nested: each (family,
difficulty) cell draws its own questions from its own random stream, rows interleave the cells
round-robin, and a question seen before in a cell is drawn again (no duplicate prompts). So the
first 500 rows of `skills:n=2000` are exactly `skills:n=500`, and any prefix is balanced.

To make a family easier or harder, edit its knobs in LEVELS.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import UserError

SKILLS = "skills"
DEFAULT_ROWS = 2000
DEFAULT_SEED = 0
DIFFICULTIES = (1, 2, 3)
TRIES_PER_ROW = 50  # draws per wanted row before a cell is declared too small for the request

# The knobs of each family, per difficulty level.
LEVELS: dict[str, dict[int, dict]] = {
    # Level 1 is within reach of SmolLM2-135M after a short LoRA run (the datasheet has the measurement).
    # Operands are a digit count, or a range for small numbers (2-12: the times tables).
    "addition": {1: {"digits": (range(2, 13), range(2, 13))}, 2: {"digits": (2, 2)}, 3: {"digits": (3, 4)}},
    "subtraction": {1: {"digits": (range(2, 21), range(2, 10))}, 2: {"digits": (2, 2)}, 3: {"digits": (3, 3), "negative": True}},
    "multiplication": {
        1: {"digits": (range(2, 13), range(2, 13))},
        2: {"digits": (range(13, 100), range(2, 10))},
        3: {"digits": (2, 2)},
    },
    "sort_words": {1: {"words": 2}, 2: {"words": 3}, 3: {"words": 5}},
    "reverse_string": {1: {"letters": 2}, 2: {"letters": 3}, 3: {"letters": 5}},
    "count_items": {1: {"items": 3}, 2: {"items": 5}, 3: {"items": 8}},
    "unit_conversion": {
        1: {"values": range(1, 21), "decimal": True},
        2: {"values": range(21, 100)},
        3: {"values": range(1000, 10000), "inverse": True},
    },
    "weekday": {
        1: {"days": range(1, 21)},
        2: {"days": range(21, 101), "before": True},
        3: {"days": range(101, 1001), "before": True},
    },
    "json_field": {1: {"keys": 3, "depth": 1}, 2: {"keys": 6, "depth": 1}, 3: {"keys": 3, "depth": 3}},
    "caesar_shift": {
        1: {"letters": 1, "shifts": range(1, 5)},
        2: {"letters": 2, "shifts": range(1, 2)},
        3: {"letters": 4, "shifts": range(1, 26)},
    },
    "max_min": {
        1: {"count": 4, "values": range(1, 100)},
        2: {"count": 6, "values": range(100, 1000)},
        3: {"count": 8, "values": range(-999, 1000)},
    },
}
FAMILIES = tuple(LEVELS)

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Alphabetical on purpose: sort_words picks sorted indices, so its answer needs no sorting.
WORDS = (
    "anchor", "apple", "apricot", "basket", "beach", "bread", "bridge", "candle", "car", "card", "castle", "cloud",
    "desert", "dinner", "dog", "door", "eagle", "engine", "feather", "forest", "garden", "glass", "guitar", "harbor",
    "honey", "island", "jacket", "jungle", "kettle", "ladder", "lantern", "lemon", "marble", "meadow", "mirror", "needle",
    "ocean", "orbit", "paper", "pencil", "pepper", "planet", "pocket", "river", "rocket", "saddle", "silver", "stone",
    "table", "ticket", "tiger", "tunnel", "valley", "velvet", "violin", "wagon", "window", "winter", "yellow", "zipper",
)  # fmt: skip
CATEGORIES = {
    "fruits": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "melon"),
    "animals": ("cat", "dog", "horse", "lion", "mouse", "rabbit", "sheep", "tiger", "whale", "zebra"),
    "colors": ("red", "blue", "green", "yellow", "purple", "pink", "brown", "black", "white", "gray"),
    "vehicles": ("bus", "car", "bicycle", "truck", "train", "boat", "plane", "tram", "scooter", "van"),
}
UNIT_PAIRS = (  # (larger unit, smaller unit, smaller units per larger unit)
    ("kilometer", "meter", 1000), ("meter", "centimeter", 100), ("centimeter", "millimeter", 10),
    ("kilogram", "gram", 1000), ("liter", "milliliter", 1000), ("hour", "minute", 60), ("minute", "second", 60),
    ("day", "hour", 24), ("week", "day", 7), ("year", "month", 12),
)  # fmt: skip
JSON_LEAVES = {
    "name": ("Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mateo", "Nora"),
    "city": ("Lisbon", "Oslo", "Cairo", "Lima", "Seoul", "Dublin", "Nairobi", "Quito", "Hanoi", "Perth", "Porto", "Riga"),
    "color": CATEGORIES["colors"],
    "pet": ("cat", "dog", "parrot", "hamster", "turtle", "rabbit", "goldfish"),
    "job": ("baker", "nurse", "pilot", "farmer", "teacher", "plumber", "chemist", "painter"),
    "food": ("soup", "pasta", "rice", "salad", "bread", "noodles", "curry", "tacos"),
    "age": range(18, 91),
    "year": range(1950, 2025),
    "score": range(0, 101),
    "floor": range(1, 41),
}
JSON_CONTAINERS = ("user", "owner", "address", "details", "profile", "contact", "office", "settings")


@dataclass(frozen=True)
class Problem:
    instruction: str
    input: str
    output: str
    key: tuple  # the question itself, phrasing aside: two rows with one key are duplicates


def generate_skills(
    n_rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED, families: Iterable[str] | None = None, difficulties=DIFFICULTIES
) -> list[dict]:
    """`n_rows` rows {task, difficulty, verifiable, instruction, input, output}, balanced over the
    (family, difficulty) cells (counts differ by at most one), deterministic in `seed`."""
    families, difficulties = check_families(families), check_difficulties(difficulties)
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise UserError(f"skills: the number of rows must be a whole number >= 1, got {n_rows!r}")
    cells = [(family, level) for family in families for level in difficulties]
    made = [_cell_rows(family, level, seed, len(range(i, n_rows, len(cells)))) for i, (family, level) in enumerate(cells)]
    return [made[i % len(cells)][i // len(cells)] for i in range(n_rows)]


def _cell_rows(family: str, level: int, seed: int, count: int) -> list[dict]:
    rng = random.Random(f"{SKILLS}/{seed}/{family}/{level}")  # str seeds are hashed with sha512: stable across runs
    make, knobs = GENERATORS[family], LEVELS[family][level]
    rows, seen = [], set()
    for _ in range(count * TRIES_PER_ROW):
        if len(rows) == count:
            break
        problem = make(rng, **knobs)
        if problem.key not in seen:
            seen.add(problem.key)
            rows.append(
                {
                    "task": family,
                    "difficulty": level,
                    "verifiable": True,
                    "instruction": problem.instruction,
                    "input": problem.input,
                    "output": problem.output,
                }
            )
    if len(rows) < count:
        raise UserError(
            f"skills: family {family!r} at difficulty {level} has too few distinct questions for {count} rows: "
            f"ask for fewer rows or add families/difficulties (e.g. skills:n=1000)"
        )
    return rows


def check_families(families: Iterable[str] | None) -> tuple[str, ...]:
    if families is None:
        return FAMILIES
    families = tuple(dict.fromkeys(families))
    unknown = [f for f in families if f not in LEVELS]
    if unknown or not families:
        raise UserError(f"skills: unknown family {unknown[0] if unknown else '(none)'!r}; families are {', '.join(FAMILIES)}")
    return families


def check_difficulties(difficulties) -> tuple[int, ...]:
    difficulties = tuple(dict.fromkeys(difficulties))
    if not difficulties or any(d not in DIFFICULTIES or isinstance(d, bool) for d in difficulties):
        raise UserError(f"skills: difficulties must be among {', '.join(map(str, DIFFICULTIES))}, got {list(difficulties)}")
    return difficulties


def parse_skills_source(source: str) -> dict:
    """`skills`, `skills:500` or `skills:n=500,seed=3,families=addition+weekday,difficulties=1+2` -> kwargs."""
    _, _, options = source.partition(":")
    if not options.strip():
        return {}
    if options.strip().isdigit():
        return {"n_rows": int(options)}
    kwargs = {}
    for item in options.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not value:
            raise UserError(f"data.source {source!r}: option {item!r} is not KEY=VALUE (e.g. skills:n=500,seed=3)")
        if key in ("n", "seed"):
            if not value.lstrip("-").isdigit():
                raise UserError(f"data.source {source!r}: {key} must be a whole number, got {value!r}")
            kwargs["n_rows" if key == "n" else "seed"] = int(value)
        elif key == "families":
            kwargs["families"] = [f.strip() for f in value.split("+")]
        elif key == "difficulties":
            if not all(d.strip().isdigit() for d in value.split("+")):
                raise UserError(f"data.source {source!r}: difficulties are numbers joined by '+', e.g. difficulties=1+2")
            kwargs["difficulties"] = [int(d) for d in value.split("+")]
        else:
            raise UserError(f"data.source {source!r}: unknown option {key!r}; use n, seed, families, difficulties")
    return kwargs


def is_skills_source(source: str) -> bool:
    return source == SKILLS or source.startswith(SKILLS + ":")


def skills_rows(source: str) -> list[dict]:
    return generate_skills(**parse_skills_source(source))


# ---------------------------------------------------------------- families


def _number(rng: random.Random, digits: int | range) -> int:
    """A random whole number with `digits` digits (one-digit numbers start at 2: x0 and x1 are giveaways), or from a range."""
    if isinstance(digits, range):
        return rng.choice(digits)
    return rng.randint(10 ** (digits - 1) if digits > 1 else 2, 10**digits - 1)


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def addition(rng, digits):
    a, b = _number(rng, digits[0]), _number(rng, digits[1])
    phrasings = [
        (f"What is {a} + {b}? Answer with the number only.", ""),
        (f"Add {a} and {b}. Reply with just the sum.", ""),
        (f"Calculate the sum of {a} and {b}. Give only the number.", ""),
        ("Work out this sum. Answer with the number only.", f"{a} + {b}"),
    ]
    return Problem(*rng.choice(phrasings), str(a + b), (a, b))


def subtraction(rng, digits, negative=False):
    a, b = _number(rng, digits[0]), _number(rng, digits[1])
    if b > a and not negative:
        a, b = b, a
    phrasings = [
        (f"What is {a} - {b}? Answer with the number only.", ""),
        (f"Subtract {b} from {a}. Reply with just the result.", ""),
        (f"How much is {a} minus {b}? Give only the number.", ""),
        ("Work out this difference. Answer with the number only.", f"{a} - {b}"),
    ]
    return Problem(*rng.choice(phrasings), str(a - b), (a, b))


def multiplication(rng, digits):
    a, b = _number(rng, digits[0]), _number(rng, digits[1])
    phrasings = [
        (f"What is {a} times {b}? Answer with the number only.", ""),
        (f"Multiply {a} by {b}. Reply with just the product.", ""),
        (f"Calculate the product of {a} and {b}. Give only the number.", ""),
        ("Work out this product. Answer with the number only.", f"{a} * {b}"),
    ]
    return Problem(*rng.choice(phrasings), str(a * b), (a, b))


def sort_words(rng, words):
    ordered = [WORDS[i] for i in sorted(rng.sample(range(len(WORDS)), words))]
    shown = list(ordered)
    while shown == ordered:
        rng.shuffle(shown)
    instruction = rng.choice(
        [
            "Sort these words alphabetically. Answer with the sorted words separated by commas, nothing else.",
            "Put the following words in alphabetical order. Reply with only the list, comma-separated.",
            "Arrange these words from A to Z. Give just the words, separated by commas.",
        ]
    )
    return Problem(instruction, ", ".join(shown), ", ".join(ordered), tuple(shown))


def reverse_string(rng, letters):
    chars = [rng.choice(string.ascii_lowercase) for _ in range(letters)]
    while chars == chars[::-1]:  # a palindrome would reward copying the input
        chars = [rng.choice(string.ascii_lowercase) for _ in range(letters)]
    instruction = rng.choice(
        [
            "Reverse this string. Answer with the reversed string only.",
            "Write these letters in reverse order. Reply with only the result.",
            "Spell this text backwards. Give just the reversed letters.",
        ]
    )
    return Problem(instruction, "".join(chars), "".join(chars[i] for i in range(letters - 1, -1, -1)), tuple(chars))


def count_items(rng, items):
    kind = rng.choice(sorted(CATEGORIES))
    count = rng.randint(1, min(items - 1, len(CATEGORIES[kind])))
    others = [item for other in sorted(CATEGORIES) if other != kind for item in CATEGORIES[other]]
    shown = rng.sample(CATEGORIES[kind], count) + rng.sample(others, items - count)
    rng.shuffle(shown)
    instruction = rng.choice(
        [
            f"How many {kind} are in this list? Answer with the number only.",
            f"Count the {kind} in the following list. Reply with just the number.",
            f"In this list, how many items are {kind}? Give only the count.",
        ]
    )
    return Problem(instruction, ", ".join(shown), str(count), (kind, tuple(shown)))


def unit_conversion(rng, values, inverse=False, decimal=False):
    larger, smaller, factor = rng.choice([p for p in UNIT_PAIRS if p[2] in (10, 100, 1000)] if decimal else UNIT_PAIRS)
    count = rng.choice(values)
    if inverse:  # a whole number of larger units, given in smaller ones
        value, source, target, answer = count * factor, smaller, larger, count
    else:
        value, source, target, answer = count, larger, smaller, count * factor
    instruction = rng.choice(
        [
            f"Convert {_plural(value, source)} to {target}s. Answer with the number only.",
            f"How many {target}s are there in {_plural(value, source)}? Reply with just the number.",
            f"{_plural(value, source)} equals how many {target}s? Give only the number.",
        ]
    )
    return Problem(instruction, "", str(answer), (value, source, target))


def weekday(rng, days, before=False):
    start, offset = rng.randrange(7), rng.choice(days)
    back = before and rng.random() < 0.5
    day, span = WEEKDAYS[start], _plural(offset, "day")
    if back:
        phrasings = [
            f"What day of the week was it {span} before {day}? Answer with the day's name only.",
            f"If today is {day}, what day of the week was it {span} ago? Reply with just the day.",
            f"Starting from a {day}, count {span} back. Which weekday do you land on? Give only its name.",
        ]
    else:
        phrasings = [
            f"What day of the week is {span} after {day}? Answer with the day's name only.",
            f"If today is {day}, what day of the week will it be in {span}? Reply with just the day.",
            f"Starting from a {day}, count {span} forward. Which weekday do you land on? Give only its name.",
        ]
    answer = WEEKDAYS[(start - offset if back else start + offset) % 7]
    return Problem(rng.choice(phrasings), "", answer, (start, offset, back))


def json_field(rng, keys, depth):
    obj, path, value = _json_object(rng, keys, rng.sample(JSON_CONTAINERS, depth - 1))
    instruction = rng.choice(
        [
            f'What is the value of "{path}" in this JSON object? Answer with the value only.',
            f'Read the JSON below and give the value of the field "{path}". Reply with the value alone.',
            f'Extract the "{path}" field from this JSON. Answer with just its value.',
        ]
    )
    text = json.dumps(obj)
    return Problem(instruction, text, str(value), (text, path))


def _json_object(rng, keys: int, containers: list[str]) -> tuple[dict, str, object]:
    """An object with `keys` leaves plus one nested object per container; the asked leaf is in the deepest one."""
    names = rng.sample(sorted(JSON_LEAVES), keys)
    items = [(name, rng.choice(JSON_LEAVES[name])) for name in names]
    if containers:
        child, child_path, value = _json_object(rng, keys, containers[1:])
        items.append((containers[0], child))
        path = f"{containers[0]}.{child_path}"
    else:
        path, value = items[rng.randrange(keys)]
    rng.shuffle(items)
    return dict(items), path, value


def caesar_shift(rng, letters, shifts):
    shift = rng.choice(shifts)
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(letters))
    places = _plural(shift, "place")
    instruction = rng.choice(
        [
            f"Shift every letter of this word {places} forward in the alphabet, wrapping from z to a. "
            "Answer with the shifted letters only.",
            f"Apply a Caesar shift of {shift} to this word (each letter moves {places} forward, z wraps around to a). "
            "Reply with just the result.",
            f"Encode this word with a Caesar cipher that moves each letter {places} forward. Give only the encoded word.",
        ]
    )
    answer = "".join(chr((ord(c) - ord("a") + shift) % 26 + ord("a")) for c in word)
    return Problem(instruction, word, answer, (word, shift))


def max_min(rng, count, values):
    numbers = rng.sample(values, count)
    largest = rng.random() < 0.5
    ranked = sorted(numbers)
    word = rng.choice([("largest", "smallest"), ("highest", "lowest"), ("maximum", "minimum")])[0 if largest else 1]
    instruction = rng.choice(
        [
            f"What is the {word} number in this list? Answer with the number only.",
            f"Find the {word} of these numbers. Reply with just the number.",
            f"Which number in the list is the {word}? Give only the number.",
        ]
    )
    return Problem(
        instruction, ", ".join(map(str, numbers)), str(ranked[-1] if largest else ranked[0]), (tuple(numbers), largest)
    )


GENERATORS: dict[str, Callable[..., Problem]] = {
    make.__name__: make
    for make in (addition, subtraction, multiplication, sort_words, reverse_string, count_items)
    + (unit_conversion, weekday, json_field, caesar_shift, max_min)
}
