"""What `validate submit` reads and sends (cli/inputs.py), and the exit codes (cli/outcome.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT
from cli.inputs import expand, idempotency_key, load_ruleset, parse_rules, parse_ruleset, read_uploads
from cli.outcome import CliError, below_thresholds, verdict_code
from core.prompt import PART_RESPONSE_FORMAT, PartView, part_messages
from local.simulator.verdicts import read_call, verdicts


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


RULESET_FILE = """
description: Tidy files.
rules:
  - id: no-secret
    text: The file must not contain "secret".
    examples:
      - {text: "the secret\\n", violates: true, lines: [1]}
      - {text: "fine\\n", violates: false}
  - id: ids
    text: Every row has an id.
"""


def test_a_rules_file_with_examples_submits_the_rules_alone_and_pushes_them_with_their_examples() -> None:
    assert parse_rules(RULESET_FILE, "r.yaml") == [
        {"id": "no-secret", "text": 'The file must not contain "secret".'},
        {"id": "ids", "text": "Every row has an id."},
    ]
    pushed = parse_ruleset(RULESET_FILE, "r.yaml")
    assert pushed.description == "Tidy files."
    assert pushed.rules == [
        {
            "id": "no-secret",
            "text": 'The file must not contain "secret".',
            "examples": [
                {"text": "the secret\n", "violates": True, "lines": [1]},
                {"text": "fine\n", "violates": False},
            ],
        },
        {"id": "ids", "text": "Every row has an id.", "examples": []},
    ]
    # The id -> text mapping is a rule set too (without examples).
    assert parse_ruleset("a: No secrets.\n", "r.yaml").rules == [{"id": "a", "text": "No secrets.", "examples": []}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- No secrets.\n", "rule 1: a rule set's rule is {id, text, examples}"),
        ("- {id: a, text: x, examples: [{text: y}]}\n", "rule 1, example 1: an example is"),
        ("- {id: a, text: x, examples: [{text: y, violates: yes please}]}\n", "an example is"),
        ("- {id: a, text: x, examples: [{text: y, violates: true, lines: 3}]}\n", "`lines` is a list"),
        ("- {id: a, text: x, severity: high}\n", "unknown keys severity"),
        ("{description: [1], rules: [{id: a, text: x}]}", "`description` is text"),
    ],
)
def test_a_malformed_rule_set_is_a_usage_error_naming_the_rule(text: str, message: str) -> None:
    with pytest.raises(CliError, match=message) as raised:
        parse_ruleset(text, "r.yaml")
    assert raised.value.code == 3


def test_the_tours_examples_are_right_by_the_simulators_semantics() -> None:
    """examples/rules.yaml: each example's `violates` and `lines` are what the simulator answers for its rule,
    so the file's rule test measures the pipeline, not a wrong fixture."""
    content = load_ruleset(str(PROJECT_ROOT / "examples" / "rules.yaml"))
    checked = 0
    for rule in content.rules:
        for example in rule["examples"]:
            text = example["text"]
            view = PartView("example.txt", 1, max(1, text.count("\n")))
            call = read_call(
                {"messages": part_messages(view, text, [rule], "0" * 16), "response_format": PART_RESPONSE_FORMAT}
            )
            (judged,) = verdicts(call)
            cited = {n for f in judged["findings"] for n in range(f["line"], f["end_line"] + 1)}
            assert judged["passed"] is not example["violates"], (rule["id"], text)
            assert cited == set(example.get("lines") or []) or not example["violates"], (rule["id"], text)
            checked += 1
    assert checked == 6


def test_thresholds_name_the_rules_below_them_and_never_an_undefined_ratio() -> None:
    report = {
        "rules": [
            {"id": "a", "precision": 0.5, "recall": 1.0},
            {"id": "b", "precision": None, "recall": 0.0},
            {"id": "c", "precision": None, "recall": None},
        ]
    }
    assert below_thresholds(report, 0.8, None) == ["a: precision 0.50 < 0.8"]
    assert below_thresholds(report, None, 0.5) == ["b: recall 0.00 < 0.5"]
    assert below_thresholds(report, 0.5, 0.0) == []
    assert below_thresholds(report, None, None) == []


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
    flex = idempotency_key(read_uploads([tree / "data" / "a.csv"]), rules, lane={"tier": "flex"})
    assert flex != first and flex != idempotency_key(
        read_uploads([tree / "data" / "a.csv"]), rules, lane={"model": "m"}
    )
    assert idempotency_key(read_uploads([tree / "data" / "a.csv"]), rules, lane={}) == first  # no lane: as before
    with_set = idempotency_key(read_uploads([tree / "data" / "a.csv"]), rules, "pii@2")
    assert with_set != first and with_set != idempotency_key(read_uploads([tree / "data" / "a.csv"]), rules, "pii@3")


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
