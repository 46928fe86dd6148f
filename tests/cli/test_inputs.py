"""What `validate submit` reads and sends (cli/inputs.py), and the exit codes (cli/outcome.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.inputs import expand, idempotency_key, parse_rules, read_uploads
from cli.outcome import CliError, verdict_code


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data" / "nested").mkdir(parents=True)
    (tmp_path / "data" / ".git").mkdir()
    for name, text in {
        "data/a.csv": "id\n1\n",
        "data/b.md": "# b\n",
        "data/nested/c.csv": "id\n2\n",
        "data/.hidden.csv": "id\n3\n",
        "data/.git/config": "x",
        "other/a.csv": "id\n4\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_paths_globs_and_directories_expand_to_files_once_in_order(tree: Path) -> None:
    files = expand([str(tree / "data" / "b.md"), str(tree / "data"), str(tree / "data" / "**" / "*.csv")])

    # b.md first (named first), then the directory's visible files sorted, hidden ones left out;
    # the glob adds nothing new.
    assert [p.relative_to(tree).as_posix() for p in files] == ["data/b.md", "data/a.csv", "data/nested/c.csv"]


@pytest.mark.parametrize(
    ("given", "message"),
    [("missing.csv", "No such file or directory"), ("*.nothing", "No file matches"), ("empty", "holds no files")],
)
def test_a_path_that_names_no_file_is_a_usage_error(tree: Path, given: str, message: str) -> None:
    (tree / "empty").mkdir()

    with pytest.raises(CliError, match=message) as raised:
        expand([str(tree / given)])
    assert raised.value.code == 3


def test_two_files_with_one_base_name_are_refused_naming_both(tree: Path) -> None:
    with pytest.raises(CliError, match=r"Two files are named a\.csv") as raised:
        read_uploads(expand([str(tree / "data" / "a.csv"), str(tree / "other" / "a.csv")]))
    assert "other/a.csv" in raised.value.message


@pytest.mark.parametrize(
    "text",
    [
        '["No secrets.", {"id": "ids", "text": "Every row has an id."}]',  # JSON list
        "- No secrets.\n- id: ids\n  text: Every row has an id.\n",  # YAML list
        "rules:\n  - No secrets.\n  - {id: ids, text: Every row has an id.}\n",  # a mapping with `rules`
    ],
)
def test_rules_come_from_json_or_yaml_lists(text: str) -> None:
    assert parse_rules(text, "rules") == ["No secrets.", {"id": "ids", "text": "Every row has an id."}]


def test_a_mapping_of_ids_to_texts_is_rules_with_those_ids() -> None:
    assert parse_rules("no-secret: No secrets.\nids: Every row has an id.\n", "rules.yaml") == [
        {"id": "no-secret", "text": "No secrets."},
        {"id": "ids", "text": "Every row has an id."},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1, 2]", "rule 1: a rule is a string"), ("{}", "holds no rules"), ("[a, b", "neither YAML nor JSON")],
)
def test_malformed_rules_are_a_usage_error_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(CliError, match=message) as raised:
        parse_rules(text, "r.yaml")
    assert raised.value.code == 3 and "r.yaml" in raised.value.message


def test_the_idempotency_key_follows_the_content_not_the_path(tree: Path) -> None:
    rules: list[str | dict[str, str]] = ["No secrets."]
    first = idempotency_key(read_uploads([tree / "data" / "a.csv"]), rules)
    (tree / "copy").mkdir()
    (tree / "copy" / "a.csv").write_text("id\n1\n")

    assert idempotency_key(read_uploads([tree / "copy" / "a.csv"]), rules) == first  # same name and bytes
    (tree / "copy" / "a.csv").write_text("id\n1\n2\n")
    assert idempotency_key(read_uploads([tree / "copy" / "a.csv"]), rules) != first  # other bytes
    assert idempotency_key(read_uploads([tree / "data" / "a.csv"]), ["Other rule."]) != first
    assert len(first) <= 255  # the API's limit for Idempotency-Key


@pytest.mark.parametrize(
    ("status", "passed", "code"),
    [
        ("SUCCEEDED", [True, True], 0),
        ("SUCCEEDED", [True, False], 1),
        ("SUCCEEDED", [True, "ungrounded"], 4),  # no failure, but a rule neither passed nor failed
        ("SUCCEEDED", [True, None], 4),  # null in an ended validation, stored before reasons: undecided too
        ("SUCCEEDED", ["ungrounded", False], 1),  # a definite failure wins
        ("FAILED", [True], 2),
        ("FAILED", ["error"], 2),
        ("CANCELLED", [], 2),
        ("RUNNING", [False], 0),  # no verdict before the end: commands that gate wait for it
        ("RUNNING", [None], 0),
    ],
)
def test_exit_code_by_status_and_verdicts(status: str, passed: list[bool | str | None], code: int) -> None:
    """`passed` per file: a verdict, or an undecided rule's reason (`passed: null` with `undecided`)."""
    results = [
        {"file": f"f{i}", "rules": [{"id": "r1", "passed": None, "undecided": p} if isinstance(p, str)
                                    else {"id": "r1", "passed": p}]}
        for i, p in enumerate(passed)
    ]  # fmt: skip
    assert verdict_code(status, results) == code
