"""Findings grounded in the text, through the whole system, with a model that makes mistakes.

The simulator misnumbers, invents, misses and re-spaces on purpose (local/simulator/mistakes.py)
and can be told to invent once (`faults`), so each path of core/grounding.py is reached here
through the API, Step Functions, the validator and combine Lambdas.
"""

from __future__ import annotations

import json
from typing import Any

from local.simulator.server import SimulatorServer
from tests.support.stack import all_results, submit, wait_for_status

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}
COPYRIGHT = {"id": "copyright", "text": 'The file must contain "Copyright".'}


def _verdicts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in result["rules"]}


def _csv(rows: int, secret_every: int) -> str:
    """A CSV file whose header names `secret_flag` (context for later parts, never their match)."""
    lines = ["id,name,secret_flag,notes"]
    for i in range(1, rows + 1):
        note = "the secret is out" if i % secret_every == 0 else f"plain note {i * 7}"
        lines.append(f'{i},"Name {i}, Jr.",no,{note}')
    lines.append("Copyright 2026 Example")
    return "\n".join(lines) + "\n"


def _json(items: int, secret_every: int) -> str:
    records = [
        {"id": i, "note": "a secret value" if i % secret_every == 0 else f"value {i}", "pad": "x" * 40}
        for i in range(items)
    ]
    return json.dumps(records, indent=1) + "\n"


def _true_lines(text: str, word: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if word in line.lower()]


def test_misnumbered_and_respaced_findings_come_back_to_their_lines_in_csv_and_json_parts(
    api: Any, simulator: SimulatorServer
) -> None:
    simulator.reconfigure(misnumber_rate=1.0, respace_rate=1.0, mistake_seed=3)
    documents = {"people.csv": _csv(240, 37), "items.json": _json(60, 13)}

    vid = submit(api, documents, [NO_SECRET, COPYRIGHT])["id"]
    done = wait_for_status(api, vid)

    assert done["status"] == "SUCCEEDED", done
    assert all(f["parts"] > 1 for f in done["files"]), done["files"]  # CSV and JSON parts, with a combine each
    results = {r["file"]: _verdicts(r) for r in all_results(api, vid)}
    delivered = 0
    for name, text in documents.items():
        secret = results[name]["no-secret"]
        # Line 1 of the CSV holds "secret_flag": part 1's own line; later parts only see it as context.
        assert [f["line"] for f in secret["findings"]] == _true_lines(text, "secret"), name
        assert all(f["cited_line"] != f["line"] for f in secret["findings"] if "cited_line" in f)
        assert all(f["snippet"] == text.splitlines()[f["line"] - 1][:240] for f in secret["findings"])
        assert secret["ungrounded"] == []
        delivered += len(secret["findings"])
    assert results["people.csv"]["copyright"]["passed"] is True
    assert results["items.json"]["copyright"]["findings"][0]["kind"] == "absence"
    # Every finding a part reported was misnumbered, and each came back.
    assert done["usage"]["relocated"] == delivered == simulator.stats.snapshot()["mistakes"]["misnumbered"]
    assert done["usage"]["ungrounded"] == done["usage"]["reasked"] == 0


def test_an_invented_failure_is_asked_again_and_the_grounded_second_answer_decides(
    api: Any, simulator: SimulatorServer
) -> None:
    simulator.reconfigure(faults=["part:invent"])  # the first answer only

    vid = submit(api, {"a.txt": "Copyright 2026\nnothing to see\n"}, [NO_SECRET, COPYRIGHT])["id"]
    done = wait_for_status(api, vid)

    rules = _verdicts(all_results(api, vid)[0])
    assert done["status"] == "SUCCEEDED", done
    assert rules["no-secret"]["passed"] is True and rules["no-secret"]["findings"] == []
    [claim] = rules["no-secret"]["ungrounded"]  # kept for audit, never a finding
    assert claim["source"] == "finding" and claim["quote"] not in "Copyright 2026\nnothing to see\n"
    assert rules["copyright"]["passed"] is True  # kept from the first answer
    usage = done["usage"]
    assert (usage["reasked"], usage["ungrounded"]) == (1, 1)
    assert usage["model_calls"] == usage["attempts"] == 2 == simulator.stats.requests  # a re-ask is an attempt
    assert usage["prompt_tokens"] + usage["completion_tokens"] == simulator.stats.billed_tokens


def test_a_failure_never_backed_by_a_quote_is_undecided_never_reused_and_a_note_in_sarif(
    api: Any, simulator: SimulatorServer
) -> None:
    simulator.reconfigure(faults=["part:invent", "part:invent"])  # the question and its re-ask
    text = "Copyright 2026\nnothing to see\n"

    vid = submit(api, {"a.txt": text}, [NO_SECRET, COPYRIGHT])["id"]
    done = wait_for_status(api, vid)

    result = all_results(api, vid)[0]
    rule = _verdicts(result)["no-secret"]
    assert done["status"] == "SUCCEEDED" and result["status"] == "SUCCEEDED", done
    assert (rule["passed"], rule["undecided"], rule["findings"]) == (None, "ungrounded", [])
    assert len(rule["ungrounded"]) == 2
    sarif = json.loads(api.get(f"/validations/{vid}/report", params={"format": "sarif"}).text)
    [note] = sarif["runs"][0]["results"]
    assert (note["level"], note["ruleId"], note["properties"]) == ("note", "no-secret", {"undecided": "ungrounded"})

    again = wait_for_status(api, submit(api, {"a.txt": text}, [NO_SECRET, COPYRIGHT])["id"])
    assert again["usage"]["reused_parts"] == 0  # an undecided answer is never reused
    assert _verdicts(all_results(api, again["id"])[0])["no-secret"]["passed"] is True


def test_a_combine_pass_without_grounded_evidence_is_asked_again(api: Any, simulator: SimulatorServer) -> None:
    simulator.reconfigure(faults=["combine:invent"])
    text = "".join(f"row {i}: plain value {i * 7}\n" for i in range(1, 400)) + "Copyright 2026\n"

    vid = submit(api, {"big.txt": text}, [NO_SECRET, COPYRIGHT])["id"]
    done = wait_for_status(api, vid)

    rules = _verdicts(all_results(api, vid)[0])
    assert done["status"] == "SUCCEEDED" and done["files"][0]["parts"] > 2, done
    assert rules["no-secret"]["passed"] is True and rules["copyright"]["passed"] is True
    assert done["usage"]["reasked"] == 1 and simulator.stats.combine_calls == 2
