"""Rule sets end to end: `validate rules push`, `validate rules test` through the real pipeline (a
validation of kind `test`, with a rule the simulator misunderstands), its report checked against a table
worked out by hand, the exit codes, and a validation by `name@version` whose results name the version."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.settings import PROJECT_ROOT
from local.simulator.server import SimulatorServer
from tests.cli.conftest import Invoke, json_answer, json_lines
from tests.support.stack import ADMIN, ADMIN_KEY

pytestmark = pytest.mark.stack

# The simulator misreads no-secret on one text in 2 (faults.misread: a hash of the shown lines, pinned in
# tests/test_simulator_misunderstand.py for these texts). Expected per example, worked out by hand:
RULESET = {
    "description": "Secrets and totals.",
    "rules": [
        {
            "id": "no-secret",
            "text": 'The file must not contain "secret".',
            "examples": [
                {"text": "id,note\n1,the secret\n", "violates": True, "lines": [2]},  # TP, cites line 2: line-exact
                {"text": "secret on line 1\nand line 2\n", "violates": True, "lines": [1]},  # misread: passes, FN
                {"text": "the secret is out\n", "violates": True},  # TP
                {"text": "id,note\n1,fine\n", "violates": False},  # TN
                {"text": "fine\n", "violates": False},  # misread: fails at line 1, FP
            ],
        },
        {
            "id": "has-total",
            "text": 'The file must contain "total".',
            "examples": [
                {"text": "a\nb\ntotal: 3\n", "violates": False},  # TN
                {"text": "a\nb\n", "violates": True, "lines": [1, 2]},  # TP: absent from lines 1-2, line-exact
            ],
        },
    ],
}
EXPECTED = {
    #            TP FP FN TN undecided precision recall  line-exact (exact, checked)
    "no-secret": (2, 1, 1, 1, 0, 2 / 3, 2 / 3, (1, 2)),
    "has-total": (1, 0, 0, 1, 0, 1.0, 1.0, (1, 1)),
}


def counts(rule: dict[str, Any]) -> tuple[Any, ...]:
    exact = rule["line_exact"]
    return (rule["tp"], rule["fp"], rule["fn"], rule["tn"], rule["undecided"], pytest.approx(rule["precision"]),
            pytest.approx(rule["recall"]), (exact["exact"], exact["checked"]))  # fmt: skip


@pytest.mark.slow(12)
def test_push_test_gate_and_validate_by_version_with_a_rule_the_simulator_misunderstands(
    served: str, simulator: SimulatorServer, invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VALIDATE_URL", served)
    monkeypatch.setenv("VALIDATE_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("COLUMNS", "160")  # the table unabridged
    api = httpx.Client(base_url=served, headers=ADMIN, timeout=60)
    name = f"secrets-{uuid.uuid4().hex[:6]}"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(RULESET))
    simulator.reconfigure(faults=["misunderstand/2:no-secret"])

    # Push: version 1, then the same content again is that version.
    code, out, _ = invoke("rules", "push", str(rules_file), "--name", name)
    assert (code, out.strip()) == (0, f"{name}@1 created: 2 rules, 7 examples")
    code, out, _ = invoke("rules", "push", str(rules_file), "--name", name)
    assert (code, out.strip()) == (
        0,
        f"{name}@1 unchanged (the same content as the latest version): 2 rules, 7 examples",
    )

    # Test the latest version; no-secret's precision 2/3 is below 0.7: exit 1.
    code, out, err = invoke("rules", "test", name, "--min-precision", "0.7")
    assert code == 1, err
    assert "Below the threshold: no-secret: precision 0.67 < 0.7" in err
    assert re.search(
        r"no-secret\s*│\s*5\s*│\s*2\s*│\s*1\s*│\s*1\s*│\s*1\s*│\s*0\s*│\s*0\.67\s*│\s*0\.67\s*│\s*1/2", out
    ), out
    assert "no-secret example 2: passed, but it violates the rule" in out
    assert "no-secret example 5: flagged, but it does not violate the rule" in out and "line 1: misunderstood" in out
    assert "Overall: precision 0.75, recall 0.75." in out

    # The report, as stored on the version, against the table worked out by hand.
    tested = api.get(f"/rulesets/{name}/versions/1/test").json()
    report = tested["report"]
    assert {r["id"]: counts(r) for r in report["rules"]} == EXPECTED
    assert (report["precision"], report["recall"], report["status"]) == (0.75, 0.75, "SUCCEEDED")
    no_secret = report["rules"][0]
    assert [(f["example"], f["failure"], f["passed"]) for f in no_secret["failing"]] == [
        (2, "false_negative", True),
        (5, "false_positive", False),
    ]
    assert no_secret["failing"][1]["findings"] == [{"line": 1, "end_line": 1, "message": "misunderstood"}]
    assert [r["failing"] for r in report["rules"][1:]] == [[]]

    # It is a validation of kind `test`: one file per example, the version's rules, charged like any.
    validation = api.get(f"/validations/{tested['validation_id']}").json()
    assert validation["kind"] == "test" and validation["ruleset"]["reference"] == f"{name}@1"
    assert [f["name"] for f in validation["files"]][:2] == ["no-secret.example-1.txt", "no-secret.example-2.txt"]
    assert len(validation["files"]) == 7 and [r["id"] for r in validation["rules"]] == ["no-secret", "has-total"]
    assert validation["usage"]["model_calls"] == 7  # reuse off: every example asked

    # The same test again (NAME@V) within 24 h: the first run answers; the thresholds it meets exit 0.
    code, out, err = invoke("rules", "test", f"{name}@1", "--min-precision", "0.6", "--min-recall", "0.6", "--json")
    assert code == 0, err
    assert json_answer(out)["validation_id"] == tested["validation_id"]
    listed = api.get("/rulesets").json()["items"]
    (summary,) = [r for r in listed if r["name"] == name]
    assert summary["last_test"] == {
        "version": 1,
        "validation_id": tested["validation_id"],
        "started_at": tested["started_at"],
        "reported": True,
        "precision": 0.75,
        "recall": 0.75,
    }

    # A validation by `name@version`: its results name the version; a secret fails it (exit 1).
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("the secret\n")
    code, out, err = invoke("submit", str(data), "--ruleset", f"{name}@1", "--wait", "-f", "jsonl")
    assert code == 1, err
    rows = json_lines(out, "rule")
    assert {r["ruleset"] for r in rows} == {f"{name}@1"} and {r["rule"] for r in rows} == {"no-secret", "has-total"}

    # Usage and refusals exit 3.
    assert invoke("rules", "test", "Bad@x")[0] == 3
    code, _, err = invoke("rules", "test", f"nosuch-{uuid.uuid4().hex[:6]}")
    assert code == 3 and err.startswith("validate: 404 ")
    assert invoke("rules", "push", str(rules_file), "--name", "Bad Name")[0] == 3
    api.close()


@pytest.mark.slow(8)
def test_the_tours_rules_file_tests_clean_under_the_simulator(
    served: str, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/rules.yaml as a rule set: its examples are right by the simulator's semantics, so its test
    passes any threshold; has-ids (which the simulator passes) has only clean examples: precision and recall
    undefined, shown as such."""
    monkeypatch.setenv("VALIDATE_URL", served)
    monkeypatch.setenv("VALIDATE_API_KEY", ADMIN_KEY)
    name = f"tour-{uuid.uuid4().hex[:6]}"
    assert invoke("rules", "push", str(PROJECT_ROOT / "examples" / "rules.yaml"), "--name", name)[0] == 0

    code, out, err = invoke("rules", "test", name, "--min-precision", "1", "--min-recall", "1", "--json")

    assert code == 0, err
    rules = {r["id"]: r for r in json_answer(out)["report"]["rules"]}
    assert (rules["no-passwords"]["tp"], rules["no-passwords"]["tn"]) == (2, 2)
    assert (rules["no-passwords"]["precision"], rules["no-passwords"]["recall"]) == (1.0, 1.0)
    assert rules["no-passwords"]["line_exact"] == {"exact": 2, "checked": 2, "accuracy": 1.0}
    assert (rules["has-ids"]["tn"], rules["has-ids"]["precision"], rules["has-ids"]["recall"]) == (2, None, None)
