"""Instruction data: sources, bad rows, prompt formats, label masking, collator, splits, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from adaptive_lora.cli import main
from adaptive_lora.config import DataConfig
from adaptive_lora.data import (
    IGNORE,
    BadRow,
    Collator,
    build_example,
    content_hash,
    load_records,
    prepare_data,
    render,
    resolve_prompt_format,
    split_indices,
)
from adaptive_lora.data.records import canonical_json
from adaptive_lora.data.split import split_hash
from adaptive_lora.errors import UserError

LONG = "word " * 300  # far over the sequence lengths used below


def good_rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"instruction": f"Add {i} and {i + 1}.", "input": "" if i % 2 else f"numbers {i}", "output": str(2 * i + 1)}
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok():
    from adaptive_lora.models import load_tokenizer

    return load_tokenizer("embedded")


@pytest.fixture
def bad_jsonl(tmp_path) -> Path:
    """20 good rows, then one bad row per load-time reason, an over-long output and an over-long prompt."""
    lines = [json.dumps(r) for r in good_rows(20)]
    lines += [
        json.dumps({"instruction": "no output here"}),  # line 21: missing_field
        json.dumps({"instruction": "x", "output": 42}),  # 22: wrong_type
        json.dumps({"instruction": "x", "input": "", "output": "   "}),  # 23: empty_output
        '{"instruction": "x", "output": ',  # 24: invalid_json
        "",  # 25: blank, not a row
    ]
    body = "\n".join(lines).encode() + b"\n" + '{"instruction": "caf\xe9", "output": "y"}'.encode("latin-1")  # 26: non_utf8
    body += b"\n" + json.dumps({"instruction": "Repeat.", "output": LONG}).encode()  # 27: long response
    body += b"\n" + json.dumps({"instruction": LONG, "output": "ok"}).encode() + b"\n"  # 28: long prompt
    path = tmp_path / "bad.jsonl"
    path.write_bytes(body)
    return path


# ---------------------------------------------------------------- sources and bad rows


def test_json_array_loads_with_row_numbers(tmp_path):
    path = write_json(tmp_path / "d.json", good_rows(4))
    records, report = load_records(str(path))
    assert [r["row"] for r in records] == [1, 2, 3, 4]
    assert records[0] == {"instruction": "Add 0 and 1.", "input": "numbers 0", "output": "1", "row": 1}
    assert (report.rows_read, report.rows_kept, report.dropped, report.source_kind) == (4, 4, {}, "json")
    assert report.with_input_share == 0.5
    json.dumps(report.to_dict())  # JSON-able


def test_jsonl_counts_each_bad_reason_with_line_numbers(bad_jsonl):
    records, report = load_records(str(bad_jsonl))
    assert report.rows_read == 27  # the blank line is not a row
    assert report.rows_kept == len(records) == 22  # the over-long rows are only dropped at tokenization
    assert report.dropped == {"missing_field": 1, "wrong_type": 1, "empty_output": 1, "invalid_json": 1, "non_utf8": 1}
    assert report.first_bad_rows == {
        "missing_field": [21],
        "wrong_type": [22],
        "empty_output": [23],
        "invalid_json": [24],
        "non_utf8": [26],
    }
    assert report.row_unit == "line"


@pytest.mark.embedded
def test_tokenization_reasons_over_length_and_no_supervised_tokens(bad_jsonl, tok):
    dropped = prepare_data(DataConfig(source=str(bad_jsonl), overlength="drop", prompt_format="alpaca"), tok, 64)
    assert dropped.report.dropped["over_length"] == 2
    assert dropped.report.first_bad_rows["over_length"] == [27, 28]
    assert dropped.report.rows_kept == dropped.report.n_train + dropped.report.n_eval == 20

    cut = prepare_data(DataConfig(source=str(bad_jsonl), overlength="truncate", prompt_format="alpaca"), tok, 64)
    assert cut.report.dropped["no_supervised_tokens"] == 1
    assert cut.report.first_bad_rows["no_supervised_tokens"] == [28]
    assert cut.report.truncated == 1 and cut.report.rows_kept == 21
    assert max(len(e["input_ids"]) for e in cut.train + cut.eval) == 64
    report = cut.report
    assert report.rows_read == report.rows_kept + report.n_dropped + report.rows_unused


def test_csv_with_field_map_and_empty_cells(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,context,answer\nWhat is 2+2?,,4\n"Say ""hi"", twice",,"hi, hi"\nNo answer,,\n', encoding="utf-8")
    records, report = load_records(str(path), field_map={"instruction": "question", "input": "context", "output": "answer"})
    assert [r["output"] for r in records] == ["4", "hi, hi"]
    assert records[1]["instruction"] == 'Say "hi", twice' and records[0]["input"] == ""
    assert report.dropped == {"empty_output": 1} and report.first_bad_rows == {"empty_output": [3]}


def test_missing_column_suggests_field_map(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(UserError, match=r"qa\.jsonl.*missing field 'instruction'.*field-map instruction=COLUMN"):
        load_records(str(path))


def test_parquet_with_nested_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]} for i in range(3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chat.parquet")
    records, report = load_records(str(tmp_path / "chat.parquet"))
    assert report.source_kind == "parquet" and report.rows_kept == 3
    assert records[2]["output"] == "hello 2" and records[2]["messages"] == [{"role": "user", "content": "hi 2"}]


def test_saved_dataset_dir_and_dir_of_files(tmp_path):
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(good_rows(5)), "test": datasets.Dataset.from_list(good_rows(2))}
    ).save_to_disk(str(tmp_path / "saved"))
    records, report = load_records(str(tmp_path / "saved"))
    assert (report.source_kind, report.rows_kept) == ("disk", 5)

    files = tmp_path / "files"
    files.mkdir()
    write_jsonl(files / "train-00000.jsonl", good_rows(3))
    write_jsonl(files / "train-00001.jsonl", good_rows(2, start=3) + [{"instruction": "x"}])
    write_jsonl(files / "test.jsonl", good_rows(7))  # not a train file: ignored
    records, report = load_records(str(files))
    assert report.rows_kept == 5 and report.first_bad_rows == {"missing_field": [6]}
    with pytest.raises(UserError, match=r"train-00001\.jsonl line 3: missing_field"):
        load_records(str(files), strict=True)


def test_messages_and_sharegpt_multi_turn(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "and 3+3?"},
                {"role": "assistant", "content": "6"},
            ]
        },
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"conversations": [{"from": "human", "value": "Hi"}]},  # no assistant turn
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
    ]
    records, report = load_records(str(write_jsonl(tmp_path / "chat.jsonl", rows)))
    first, second = records
    assert first["output"] == "6" and first["instruction"] == "and 3+3?"
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "user"]
    assert first["input"] == "System: Be brief.\n\nUser: 2+2?\n\nAssistant: 4"
    assert second == {
        "instruction": "Hi",
        "input": "",
        "output": "Hello!",
        "messages": [{"role": "user", "content": "Hi"}],
        "row": 2,
    }
    assert report.dropped == {"missing_field": 1, "empty_output": 1}


def test_builtin_loads_all_rows():
    records, report = load_records("builtin")
    assert report.source_kind == "builtin" and report.rows_read >= 20
    assert report.rows_kept == report.rows_read and not report.dropped


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", b"hello", r"unsupported data file type '\.txt' for .*notes\.txt"),
        ("obj.json", b'{"instruction": "x", "output": "y"}', r"obj\.json: expected a JSON array of objects"),
        ("nums.json", b"[1, 2]", r"nums\.json: expected a JSON array of objects .*got an array of numbers"),
        ("broken.json", b'[{"instruction": ', r"broken\.json is not valid JSON"),
        ("latin.json", b'[{"instruction": "caf\xe9"}]', r"latin\.json is not valid UTF-8 \(bad byte at offset 21\)"),
        ("corrupt.parquet", b"PAR1 not really", r"could not read Parquet file .*corrupt\.parquet"),
        ("empty.jsonl", b"\n\n", r"empty\.jsonl has no rows"),
    ],
)
def test_unreadable_sources_are_one_line_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_records(str(tmp_path / name))
    assert "\n" not in str(err.value)


def test_missing_file_and_all_bad_file(tmp_path):
    with pytest.raises(UserError, match=r"data file .*nope\.jsonl does not exist"):
        load_records(str(tmp_path / "nope.jsonl"))
    path = write_jsonl(tmp_path / "allbad.jsonl", [{"instruction": "x", "output": ""}] * 3)
    with pytest.raises(UserError, match=r"no usable rows in .*allbad\.jsonl: all 3 rows were dropped; main reason: empty_output"):
        load_records(str(path))


def test_strict_mode_names_file_row_and_reason(bad_jsonl):
    with pytest.raises(UserError, match=r"bad\.jsonl line 21: missing_field: missing field 'output'"):
        load_records(str(bad_jsonl), strict=True)


def test_hub_dataset_unreachable_suggests_a_local_file(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"could not load dataset 'tatsu-lab/alpaca'.*pass a local file"):
        load_records("tatsu-lab/alpaca")


def test_hub_without_dns_loads_in_offline_mode_and_restores_it(monkeypatch):
    import socket

    import datasets
    from huggingface_hub import constants

    def no_dns(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    seen = {}

    def cached_copy(name, split):
        seen["offline"] = (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
        return datasets.Dataset.from_list(good_rows(3))

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(datasets, "load_dataset", cached_copy)
    before = (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    records, report = load_records("someone/cached-set")
    assert report.source_kind == "hub" and len(records) == 3
    assert seen["offline"] == (True, True) and (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before


def test_json_lines_saved_as_json(tmp_path):
    path = write_jsonl(tmp_path / "export.json", good_rows(3))
    records, report = load_records(str(path))
    assert (report.source_kind, report.row_unit, len(records)) == ("jsonl", "line", 3)


def test_unknown_field_map_key():
    with pytest.raises(UserError, match="unknown field 'question'"):
        load_records("builtin", field_map={"question": "instruction"})


# ---------------------------------------------------------------- prompt formats and label masking

RECORD = {"instruction": "Name a colour.", "input": "Something warm.", "output": "Red is warm.", "row": 1}


@pytest.mark.embedded
@pytest.mark.parametrize("fmt", ["alpaca", "chat", "seed"])
def test_labels_mask_exactly_the_prompt(tok, fmt):
    prompt, response = render(RECORD, tok, fmt)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    example = build_example(RECORD, tok, fmt, sequence_len=512)
    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels) > n_prompt
    for i, (token, label) in enumerate(zip(ids, labels)):
        assert label == (IGNORE if i < n_prompt else token), f"position {i}"
    assert ids[-1] == labels[-1] == tok.eos_token_id
    assert ids.count(tok.eos_token_id) == ids[:n_prompt].count(tok.eos_token_id) + 1  # exactly one EOS in the response
    # The masked span is exactly the prompt text, the supervised span the response text + EOS.
    assert tok.decode(ids[:n_prompt]) == prompt
    assert tok.decode(ids[n_prompt:]) == response.removesuffix("<|im_end|>") + "<|im_end|>"

    supervised = build_example(RECORD, tok, fmt, sequence_len=512, train_on_prompt=True)
    assert supervised["input_ids"] == ids and supervised["labels"] == ids


@pytest.mark.embedded
def test_prompt_texts(tok):
    alpaca, _ = render(RECORD, tok, "alpaca")
    assert alpaca.startswith("Below is an instruction that describes a task, paired with an input that provides further context.")
    assert alpaca.endswith("### Instruction:\nName a colour.\n\n### Input:\nSomething warm.\n\n### Response:\n")
    no_input = dict(RECORD, input="")
    assert "### Input" not in render(no_input, tok, "alpaca")[0]
    assert render(RECORD, tok, "seed") == ("Human: Name a colour.\n\nContext: Something warm.\n\nAssistant:", " Red is warm.")
    assert render(no_input, tok, "seed")[0] == "Human: Name a colour.\n\nAssistant:"
    chat_prompt, chat_response = render(RECORD, tok, "chat")
    assert chat_prompt.endswith("<|im_start|>user\nName a colour.\n\nSomething warm.<|im_end|>\n<|im_start|>assistant\n")
    assert chat_response == "Red is warm.<|im_end|>"


@pytest.mark.embedded
def test_resolve_prompt_format(tok):
    class NoTemplate:
        chat_template = None

    assert resolve_prompt_format("auto", tok) == "chat"
    assert resolve_prompt_format("auto", NoTemplate()) == "alpaca"
    with pytest.raises(UserError, match="needs a tokenizer with a chat template"):
        resolve_prompt_format("chat", NoTemplate())
    with pytest.raises(UserError, match="unknown prompt format 'vicuna'"):
        resolve_prompt_format("vicuna", tok)


@pytest.mark.embedded
def test_overlength_modes(tok):
    record = dict(RECORD, output=LONG)
    prompt_len = len(tok(render(record, tok, "alpaca")[0], add_special_tokens=False)["input_ids"])
    cut = build_example(record, tok, "alpaca", sequence_len=prompt_len + 3)
    assert len(cut["input_ids"]) == prompt_len + 3
    assert cut["labels"][:prompt_len] == [IGNORE] * prompt_len and cut["labels"][prompt_len:] == cut["input_ids"][prompt_len:]
    with pytest.raises(BadRow) as bad:
        build_example(record, tok, "alpaca", sequence_len=prompt_len, overlength="truncate")
    assert bad.value.reason == "no_supervised_tokens"
    with pytest.raises(BadRow) as bad:
        build_example(record, tok, "alpaca", sequence_len=64, overlength="drop")
    assert bad.value.reason == "over_length"
    with pytest.raises(
        UserError, match=r"row 1 is too long .*raise training.sequence_len, or set data.overlength=truncate or drop"
    ):
        build_example(record, tok, "alpaca", sequence_len=64, overlength="error")


@pytest.mark.embedded
def test_overlength_error_names_file_and_line(tmp_path, tok):
    path = write_jsonl(tmp_path / "long.jsonl", good_rows(4) + [{"instruction": "x", "output": LONG}])
    with pytest.raises(UserError, match=r"long\.jsonl line 5 is too long"):
        prepare_data(DataConfig(source=str(path), overlength="error"), tok, 128)


# ---------------------------------------------------------------- collator


@pytest.mark.embedded
def test_collator_masks_padding_by_position_not_by_id(tok):
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos  # the case this guards against
    short = build_example(RECORD, tok, "chat", 512)
    longer = build_example(dict(RECORD, output="Red is warm, and so is orange."), tok, "chat", 512)
    batch = Collator(tok)([short, longer])
    n = len(short["input_ids"])
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(longer["input_ids"]))
    assert batch["labels"][0, :n].tolist() == short["labels"] and batch["labels"][0, n - 1].item() == eos
    assert batch["labels"][0, n:].tolist() == [IGNORE] * (len(longer["input_ids"]) - n)
    assert batch["input_ids"][0, n:].eq(eos).all() and batch["attention_mask"][0].tolist() == [1] * n + [0] * (
        batch["input_ids"].shape[1] - n
    )
    assert batch["attention_mask"][1].eq(1).all() and batch["labels"][1].tolist() == longer["labels"]
    assert Collator(0, pad_to_multiple_of=8)([short])["input_ids"].shape[1] % 8 == 0


# ---------------------------------------------------------------- splits


@pytest.fixture
def rows100(tmp_path) -> str:
    return str(write_json(tmp_path / "rows.json", good_rows(100)))


def rows_of(records):
    return [r["row"] for r in records]


@pytest.mark.embedded
def test_split_is_deterministic_and_seeded(rows100, tok):
    a = prepare_data(DataConfig(source=rows100, split_seed=3), tok, 128)
    b = prepare_data(DataConfig(source=rows100, split_seed=3, prompt_format="seed"), tok, 128)
    c = prepare_data(DataConfig(source=rows100, split_seed=4), tok, 128)
    assert rows_of(a.eval_records) == rows_of(b.eval_records) and rows_of(a.train_records) == rows_of(b.train_records)
    assert a.report.content_hash == b.report.content_hash  # same rows, same split: the format is not data
    assert a.train == prepare_data(DataConfig(source=rows100, split_seed=3), tok, 128).train
    assert set(rows_of(a.eval_records)) != set(rows_of(c.eval_records)) and a.report.content_hash != c.report.content_hash
    assert (a.report.n_train, a.report.n_eval) == (90, 10)
    assert a.report.supervised_tokens_train == sum(label != IGNORE for e in a.train for label in e["labels"]) > 0
    assert a.report.tokens_train == sum(len(e["input_ids"]) for e in a.train)


@pytest.mark.embedded
def test_val_set_size_and_max_samples(rows100, tok):
    count = prepare_data(DataConfig(source=rows100, val_set_size=7), tok, 128).report
    assert (count.n_train, count.n_eval) == (93, 7)
    capped = prepare_data(DataConfig(source=rows100, max_samples=20, val_set_size=0.25), tok, 128)
    assert (capped.report.n_train, capped.report.n_eval, capped.report.rows_unused) == (15, 5, 80)
    bigger = prepare_data(DataConfig(source=rows100, max_samples=40), tok, 128)
    assert set(rows_of(capped.train_records + capped.eval_records)) < set(rows_of(bigger.train_records + bigger.eval_records))
    tiny = prepare_data(DataConfig(source=rows100, max_samples=2, val_set_size=0.1), tok, 128).report
    assert (tiny.n_train, tiny.n_eval) == (1, 1)
    with pytest.raises(UserError, match="leaving none to train on"):
        prepare_data(DataConfig(source=rows100, val_set_size=100), tok, 128)
    with pytest.raises(UserError, match="val_set_size must be"):
        prepare_data(DataConfig(source=rows100, val_set_size=0), tok, 128)


@pytest.mark.embedded
def test_max_bad_fraction(tmp_path, tok):
    path = write_jsonl(tmp_path / "half.jsonl", good_rows(4) + [{"instruction": "x"}] * 6)
    with pytest.raises(UserError, match=r"6 of 10 rows in .*half\.jsonl are unusable .*main reason: missing_field"):
        prepare_data(DataConfig(source=str(path)), tok, 128)
    assert prepare_data(DataConfig(source=str(path), max_bad_fraction=0.7), tok, 128).report.rows_kept == 4


# ---------------------------------------------------------------- CLI


@pytest.mark.embedded
def test_cli_inspect_text_and_json(bad_jsonl, capsys):
    assert main(["data", "inspect", str(bad_jsonl), "--format", "alpaca", "--sequence-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "27 read, 22 kept, 5 dropped" in out and "invalid_json: 1 (lines 24)" in out
    assert "[masked]Below is an instruction" in out and "### Response:\n[/masked]1<|im_end|>" in out

    assert main(["data", "inspect", str(bad_jsonl), "--json", "--sequence-len", "64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prompt_format"] == "chat" and summary["rows_kept"] == 22
    assert summary["over_sequence_len"] == 2 and summary["prompt_over_sequence_len"] == 1
    assert set(summary["tokens"]["prompt"]) == {"p50", "p90", "p99", "max", "mean"}


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data file") and "missing.jsonl" in err and err.count("\n") == 1
    assert main(["data", "inspect", "builtin", "--field-map", "instruction"]) == 2
    assert "is not FIELD=COLUMN" in capsys.readouterr().err


# ---------------------------------------------------------------- test split and row labels


def test_three_splits_are_disjoint_seeded_and_keep_the_validation_rows():
    before = split_indices(100, 0.1, None, 3)
    after = split_indices(100, 0.1, None, 3, test_set_size=0.2)
    assert before.test == [] and after == split_indices(100, 0.1, None, 3, 0.2)
    assert after.validation == before.validation  # adding a test split leaves validation as it was
    assert after.test == before.train[:20] and after.train == before.train[20:]  # carved from the old train rows
    assert sorted(after.train + after.validation + after.test) == list(range(100))
    assert split_indices(100, 0.1, None, 4, 0.2).test != after.test
    capped = split_indices(100, 0.1, 40, 3, test_set_size=0.25)  # fractions are of the rows after the cap
    assert (len(capped.train), len(capped.validation), len(capped.test)) == (26, 4, 10)
    assert capped.validation + capped.test + capped.train == (before.validation + before.train)[:40]  # shuffle, cap, carve
    assert len(split_indices(100, 0.1, None, 3, test_set_size=7).test) == 7
    assert len(split_indices(100, 0.1, None, 3, test_set_size=0.001).test) == 1  # a fraction is at least one row


@pytest.mark.parametrize(
    "val, test, message",
    [
        (50, 50, r"data.val_set_size=50 and data.test_set_size=50 take 50 validation and 50 test rows out of 100, leaving none"),
        (0.1, -0.1, r"data.test_set_size must be 0 \(none\), a fraction in \(0, 1\) or a row count >= 1, got -0.1"),
        (0.1, True, r"data.test_set_size must be 0 \(none\)"),
        (0.1, 2.5, r"data.test_set_size >= 1 is a row count and must be a whole number, got 2.5"),
    ],
)
def test_bad_test_set_size_is_a_one_line_error(val, test, message):
    with pytest.raises(UserError, match=message):
        split_indices(100, val, None, 0, test_set_size=test)


@pytest.mark.embedded
def test_test_split_in_prepared_data_and_report(rows100, tok):
    plain = prepare_data(DataConfig(source=rows100, split_seed=3), tok, 128)
    three = prepare_data(DataConfig(source=rows100, split_seed=3, test_set_size=0.2), tok, 128)
    report = three.report
    assert (report.n_train, report.n_eval, report.n_test, report.rows_kept, report.test_set_size) == (70, 10, 20, 100, 0.2)
    assert report.rows_read == report.rows_kept + report.n_dropped + report.rows_unused
    assert rows_of(three.eval_records) == rows_of(plain.eval_records) and three.eval == plain.eval
    assert sorted(rows_of(three.test_records + three.train_records)) == sorted(rows_of(plain.train_records))
    assert not set(rows_of(three.test_records)) & set(rows_of(three.train_records))
    assert len(three.test) == 20 and report.tokens_test == sum(len(e["input_ids"]) for e in three.test)
    assert report.supervised_tokens_test == sum(label != IGNORE for e in three.test for label in e["labels"]) > 0
    assert plain.test == plain.test_records == [] and plain.report.n_test == plain.report.tokens_test == 0

    hashes = report.split_hashes
    assert set(hashes) == {"train", "validation", "test"} and len(set(hashes.values())) == 3
    assert hashes["validation"] == plain.report.split_hashes["validation"]
    assert hashes["test"] == split_hash(list(reversed(three.test_records)))  # a split's hash names its rows, not their order
    assert plain.report.split_hashes["test"] == hashlib.sha256(b"").hexdigest()
    # Without a test split the content hash is the one runs recorded before test splits existed.
    old = hashlib.sha256()
    for split, records in (("eval", plain.eval_records), ("train", plain.train_records)):
        for record in records:
            old.update(f"{split}\t{canonical_json(record)}\n".encode())
    assert plain.report.content_hash == old.hexdigest() != report.content_hash
    json.dumps(report.to_dict())
    with pytest.raises(UserError, match="leaving none to train on"):
        prepare_data(DataConfig(source=rows100, val_set_size=0.5, test_set_size=0.5), tok, 128)


def test_row_labels_go_to_meta_and_are_type_checked(tmp_path):
    rows = [
        dict(good_rows(1)[0], task="math", difficulty=2, verifiable=True),
        dict(good_rows(1, 1)[0], task="math"),
        good_rows(1, 2)[0],
        dict(good_rows(1, 3)[0], difficulty="hard"),
        dict(good_rows(1, 4)[0], verifiable="yes"),
        dict(good_rows(1, 5)[0], task=7),
        dict(good_rows(1, 6)[0], difficulty=True),
        dict(good_rows(1, 7)[0], difficulty=2.5),
    ]
    records, report = load_records(str(write_jsonl(tmp_path / "labels.jsonl", rows)))
    assert records[0]["meta"] == {"task": "math", "difficulty": 2, "verifiable": True}
    assert records[1]["meta"] == {"task": "math"} and "meta" not in records[2]
    assert report.dropped == {"wrong_type": 5} and report.first_bad_rows == {"wrong_type": [4, 5, 6, 7, 8]}
    with pytest.raises(
        UserError, match=r"labels\.jsonl line 4: wrong_type: field 'difficulty' is string 'hard', expected a whole"
    ):
        load_records(str(tmp_path / "labels.jsonl"), strict=True)

    # Labels are not content: the hash of rows with labels is the hash of the same rows without them.
    bare, _ = load_records(str(write_jsonl(tmp_path / "bare.jsonl", good_rows(3))))
    assert content_hash(records[:2], records[2:3]) == content_hash(bare[:2], bare[2:3])

    csv = tmp_path / "labels.csv"  # CSV cells are text: "2" and "true" are read as a number and a boolean
    csv.write_text("instruction,output,task,difficulty,verifiable\nq1,a1,math,2,true\nq2,a2,,,\nq3,a3,qa,x,false\n")
    records, report = load_records(str(csv))
    assert records[0]["meta"] == {"task": "math", "difficulty": 2, "verifiable": True} and "meta" not in records[1]
    assert report.dropped == {"wrong_type": 1}
