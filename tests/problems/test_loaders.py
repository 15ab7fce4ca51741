"""load_problems: every format, field aliases, coercion, id synthesis, and precise errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from rsa.problems import Problem, ProblemLoadError, load_problems
from rsa.problems.data import synthetic_id

REPO = Path(__file__).resolve().parents[2]

ROWS = [
    {"id": "a", "problem": "What is 1 + 1?", "answer": "2"},
    {"id": "b", "problem": "What is 2 * 3?", "answer": "6", "level": 1},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl(tmp_path):
    problems = load_problems(write_jsonl(tmp_path / "p.jsonl", ROWS))
    assert problems == [
        Problem(id="a", problem="What is 1 + 1?", answer="2"),
        Problem(id="b", problem="What is 2 * 3?", answer="6", metadata={"level": 1}),
    ]


def test_json_list_and_json_lines_under_json_suffix(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(ROWS))
    assert [p.id for p in load_problems(tmp_path / "list.json")] == ["a", "b"]
    write_jsonl(tmp_path / "lines.json", ROWS)  # what datasets' to_json writes
    assert [p.id for p in load_problems(str(tmp_path / "lines.json"))] == ["a", "b"]


def test_csv(tmp_path):
    path = tmp_path / "p.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["ID", "Problem", "Answer"])
        writer.writeheader()
        writer.writerow({"ID": "2024-I-1", "Problem": "Line one\nline two", "Answer": "204"})
        writer.writerow({"ID": "2024-I-2", "Problem": "Second", "Answer": ""})
    problems = load_problems(path)
    assert problems[0] == Problem(id="2024-I-1", problem="Line one\nline two", answer="204")
    assert problems[1].answer is None


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"problem_idx": [1, 2], "problem": ["P1", "P2"], "answer": [42, 7], "problem_type": [["x"], ["y"]]})
    pq.write_table(table, tmp_path / "p.parquet")
    problems = load_problems(tmp_path / "p.parquet")
    assert [(p.id, p.answer, p.metadata) for p in problems] == [("1", "42", {"problem_type": ["x"]}), ("2", "7", {"problem_type": ["y"]})]


def test_parquet_verl_layout_with_chat_prompt(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 6*7."}]
    table = pa.table({"data_source": ["x"], "prompt": [prompt], "reward_model": [{"ground_truth": "42", "style": "rule"}]})
    pq.write_table(table, tmp_path / "verl.parquet")
    (problem,) = load_problems(tmp_path / "verl.parquet")
    assert (problem.problem, problem.answer) == ("Compute 6*7.", "42")
    assert problem.id == synthetic_id("Compute 6*7.")


def test_save_to_disk_dataset_and_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"unique_id": "u1", "question": "Q1", "expected_answer": "1.0"}])
    ds.save_to_disk(str(tmp_path / "single"))
    assert load_problems(tmp_path / "single") == [Problem(id="u1", problem="Q1", answer="1.0")]

    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list([{"question": "Q2", "answer": 2.0}])})
    dd.save_to_disk(str(tmp_path / "dict"))
    (p,) = load_problems(tmp_path / "dict", split="test")
    assert (p.problem, p.answer) == ("Q2", "2")
    with pytest.raises(ProblemLoadError, match=r"splits \['test', 'train'\]; pass split="):
        load_problems(tmp_path / "dict")
    with pytest.raises(ProblemLoadError, match="no split 'dev'"):
        load_problems(tmp_path / "dict", split="dev")


def test_answer_coercion_and_aliases(tmp_path):
    rows = [
        {"question": "q1", "answer": 42},
        {"prompt": "q2", "ground_truth": 42.0},
        {"Problem": "q3", "expected_answer": 0.5},
        {"problem": "q4", "Answer": "  \\frac{1}{2} "},
        {"problem": "q5", "answer": None},
        {"problem": "q6"},
        {"problem": "q7", "answer": float("nan")},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))  # NaN is written as a JSON extension
    assert [p.answer for p in load_problems(path)] == ["42", "42", "0.5", "\\frac{1}{2}", None, None, None]


def test_chat_prompt_takes_last_user_message_and_content_parts(tmp_path):
    rows = [
        {"prompt": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "last"}]},
        {"prompt": [{"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url", "image_url": {}}]}]},
    ]
    assert [p.problem for p in load_problems(write_jsonl(tmp_path / "c.jsonl", rows))] == ["last", "part"]


def test_missing_ids_are_stable_and_distinct(tmp_path):
    rows = [{"problem": "same"}, {"problem": "same"}, {"problem": "other"}]
    first = load_problems(write_jsonl(tmp_path / "p.jsonl", rows))
    again = load_problems(write_jsonl(tmp_path / "q.jsonl", rows))
    base = synthetic_id("same")
    assert [p.id for p in first] == [base, base + "-2", synthetic_id("other")]
    assert [p.id for p in again] == [p.id for p in first]
    # Fixed value: must not depend on PYTHONHASHSEED, the process or the machine.
    assert synthetic_id("What is 1 + 1?") == "p-" + __import__("hashlib").sha256(b"What is 1 + 1?").hexdigest()[:12]


def test_int_ids_become_strings(tmp_path):
    assert [p.id for p in load_problems(write_jsonl(tmp_path / "p.jsonl", [{"problem_idx": 3, "problem": "x"}]))] == ["3"]


def test_sample_file_loads_and_arithmetic_answers_are_right():
    problems = load_problems(REPO / "examples" / "data" / "sample.jsonl")
    assert 10 <= len(problems) <= 20
    assert all(p.answer for p in problems)
    for p in problems:
        if p.id.startswith("arith-"):
            expr = p.problem.removeprefix("What is ").removesuffix("?")
            assert str(eval(expr, {"__builtins__": {}})) == p.answer, p  # digits and + - * only


def test_synthetic_spec_through_load_problems():
    problems = load_problems("synthetic:arith:5:3")
    assert [p.id for p in problems] == [f"arith-3-{i}" for i in range(5)]
    with pytest.raises(ProblemLoadError, match="unknown kind 'nope'"):
        load_problems("synthetic:nope:5")


# ---- errors name file, line and field ------------------------------------------------------


def error_of(path, **kwargs) -> str:
    with pytest.raises(ProblemLoadError) as info:
        load_problems(path, **kwargs)
    return str(info.value)


def test_broken_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "ok"}\n\n{"problem": "x", \n')
    msg = error_of(path)
    assert str(path) in msg and "line 3" in msg and "invalid JSON" in msg


def test_missing_problem_field(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "ok"}, {"answer": "1"}])
    msg = error_of(path)
    assert f"{path}: line 2: field 'problem': missing" in msg and "question" in msg


def test_duplicate_id(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"ID": "x", "problem": "a"}, {"ID": "x", "problem": "b"}])
    msg = error_of(path)
    assert f"{path}: line 2: field 'ID': duplicate id 'x' (first at line 1)" in msg


def test_bad_field_types(tmp_path):
    msg = error_of(write_jsonl(tmp_path / "a.jsonl", [{"problem": "a", "answer": [1, 2]}]))
    assert "line 1: field 'answer': expected a string or number, got list" in msg
    msg = error_of(write_jsonl(tmp_path / "b.jsonl", [{"problem": "a", "answer": True}]))
    assert "field 'answer'" in msg
    msg = error_of(write_jsonl(tmp_path / "c.jsonl", [{"problem": "   "}]))
    assert "line 1: field 'problem': must be a non-empty string" in msg
    msg = error_of(write_jsonl(tmp_path / "d.jsonl", [{"prompt": [{"role": "system", "content": "s"}]}]))
    assert "field 'prompt': chat list has no user message" in msg
    msg = error_of(write_jsonl(tmp_path / "e.jsonl", [[1, 2]]))
    assert "line 1: expected an object, got list" in msg


def test_empty_inputs(tmp_path):
    for name, text in [("e.jsonl", ""), ("e.json", "  "), ("l.json", "[]"), ("e.csv", ""), ("h.csv", "problem,answer\n")]:
        (tmp_path / name).write_text(text)
        assert "no problems found" in error_of(tmp_path / name), name


def test_csv_errors(tmp_path):
    (tmp_path / "a.csv").write_text("title,answer\nx,1\n")
    assert "line 1: field 'problem': missing from the header" in error_of(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text('problem,answer\n"multi\nline",1\n,2\n')
    assert "line 4: field 'problem'" in error_of(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("problem,answer\nx,1,extra\n")
    assert "line 2: 3 values for 2 columns" in error_of(tmp_path / "c.csv")


def test_json_errors(tmp_path):
    (tmp_path / "a.json").write_text('[{"problem": "x"},\n {"problem": }]')
    assert "line 2: invalid JSON" in error_of(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('"just a string"')
    assert "expected a JSON list of objects, got str" in error_of(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('[{"problem": "x"}, {"question": ""}]')
    assert "record 2: field 'question': must be a non-empty string" in error_of(tmp_path / "c.json")


def test_source_level_errors(tmp_path):
    assert "no such file or directory" in error_of(tmp_path / "missing.jsonl")
    (tmp_path / "p.txt").write_text("What is 1 + 1?")
    assert "unknown format '.txt'" in error_of(tmp_path / "p.txt")
    (tmp_path / "dir").mkdir()
    assert "not a dataset written by datasets.save_to_disk" in error_of(tmp_path / "dir")
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    assert "split='test' only applies" in error_of(path, split="test")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    assert "not a readable Parquet file" in error_of(tmp_path / "bad.parquet")
    (tmp_path / "latin.jsonl").write_bytes(b'{"problem": "caf\xe9"}\n')
    assert "not UTF-8" in error_of(tmp_path / "latin.jsonl")


def test_errors_are_value_errors():
    assert issubclass(ProblemLoadError, ValueError)


def test_missing_pyarrow_gives_install_hint(tmp_path, monkeypatch):
    (tmp_path / "p.parquet").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"markovian-rsa\[data\]"):
        load_problems(tmp_path / "p.parquet")


def test_missing_datasets_gives_install_hint(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "state.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"markovian-rsa\[data\]"):
        load_problems(tmp_path / "d")
