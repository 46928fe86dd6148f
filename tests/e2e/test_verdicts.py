"""Verdicts on ordinary files, through the whole system: exact lines, whole-file rules,
structure-aware parts, answers held to the schema, and every attempt accounted for.

The simulator is deterministic (local/simulator/verdicts.py) and can be told to cut,
break or repeat its answers (`faults`), so each path here is reached on purpose.
"""

from __future__ import annotations

from typing import Any

from local.simulator.server import SimulatorServer
from tests.support.stack import MakeApi, all_results, make_user, submit, wait_for_status

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}
COPYRIGHT = {"id": "copyright", "text": 'The file must contain "Copyright".'}


def _lines(count: int, planted: dict[int, str], newline: str = "\n") -> str:
    return "".join(f"{planted.get(i, f'row {i}: plain value {i * 7}')}{newline}" for i in range(1, count + 1))


def _verdicts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in result["rules"]}


def _history_states(api: Any, vid: str) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        page = api.get(
            f"/validations/{vid}/history", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
        ).json()
        names += [
            e.get("stateEnteredEventDetails", {}).get("name")
            for e in page["events"]
            if e["type"].endswith("StateEntered")
        ]
        cursor = page["next_cursor"]
        if not cursor:
            return names


def test_a_bom_file_of_many_parts_reports_exact_lines_and_decides_whole_file_rules_once(
    api: Any, simulator: SimulatorServer
) -> None:
    planted = {1: "Copyright 2026 Example Corp", 5: "the secret one", 300: "a SECRET two", 799: "secret three"}
    text = "\ufeff" + _lines(800, planted)

    vid = submit(api, {"big.txt": text}, [NO_SECRET, COPYRIGHT])["id"]
    done = wait_for_status(api, vid)
    result = all_results(api, vid)[0]

    assert done["status"] == "SUCCEEDED", done
    parts = done["files"][0]["parts"]
    assert parts > 2
    verdicts = _verdicts(result)
    assert [(f["line"], f["end_line"]) for f in verdicts["no-secret"]["findings"]] == [(5, 5), (300, 300), (799, 799)]
    assert verdicts["no-secret"]["passed"] is False
    assert verdicts["copyright"] == {  # held by part 1 only
        "id": "copyright",
        "passed": True,
        "findings": [],
        "ungrounded": [],
        "undecided": None,
    }
    assert simulator.stats.part_calls == parts
    assert simulator.stats.combine_calls == 1
    assert "CombineFile" in _history_states(api, vid)


def test_a_whole_file_rule_no_part_satisfies_fails_once_for_the_file(api: Any, simulator: SimulatorServer) -> None:
    vid = submit(api, {"crlf.log": _lines(600, {}, newline="\r\n")}, [COPYRIGHT])["id"]
    done = wait_for_status(api, vid)

    verdict = _verdicts(all_results(api, vid)[0])["copyright"]
    assert done["status"] == "SUCCEEDED"
    assert verdict["passed"] is False
    assert [(f["line"], f["end_line"]) for f in verdict["findings"]] == [(1, 600)]
    assert done["files"][0]["lines"] == 600


def test_single_part_files_need_no_combine_call(api: Any, simulator: SimulatorServer) -> None:
    vid = submit(api, {"a.txt": "Copyright\nsecret\n", "b.txt": "nothing here\n"}, [NO_SECRET, COPYRIGHT])["id"]
    done = wait_for_status(api, vid)

    results = {r["file"]: _verdicts(r) for r in all_results(api, vid)}
    assert done["status"] == "SUCCEEDED"
    assert results["a.txt"]["no-secret"]["findings"][0]["line"] == 2
    assert results["b.txt"]["copyright"]["passed"] is False
    assert simulator.stats.combine_calls == 0
    assert "CombineFile" not in _history_states(api, vid)


def test_a_csv_header_is_context_for_every_part_and_never_a_later_parts_finding(
    api: Any, simulator: SimulatorServer
) -> None:
    header = "id,name,secret_flag"
    rows = "".join(f'{i},"Name {i}, Jr.",{"yes" if i % 97 == 0 else "no"}\n' for i in range(1, 500))
    vid = submit(api, {"people.csv": f"{header}\n{rows}"}, [NO_SECRET])["id"]
    done = wait_for_status(api, vid)

    verdict = _verdicts(all_results(api, vid)[0])["no-secret"]
    assert done["status"] == "SUCCEEDED"
    assert done["files"][0]["parts"] > 2 and done["files"][0]["kind"] == "csv"
    assert [f["line"] for f in verdict["findings"]] == [1]  # the header's own part only


def test_invalid_answers_are_retried_and_every_attempt_is_charged(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(sfn_retry_max_attempts=6, sfn_retry_max_delay_seconds=1)  # four retries, none waits over 1 s
    _, user = make_user(api, quota={"capacity_tokens": 1_000_000, "refill_tokens_per_minute": 1_000, "max_running": 5})
    simulator.reconfigure(faults=["part:malformed", "part:repeat_rule", "part:string_passed", "part:no_finding"])

    vid = submit(api, {"a.txt": _lines(20, {3: "secret"})}, [NO_SECRET, COPYRIGHT], headers=user)["id"]
    done = wait_for_status(api, vid)

    assert done["status"] == "SUCCEEDED", done
    assert [f["line"] for f in _verdicts(all_results(api, vid)[0])["no-secret"]["findings"]] == [3]
    usage = done["usage"]
    assert (
        usage["model_calls"] == usage["attempts"] == 5 == simulator.stats.requests
    )  # four refused answers, then a good one
    assert usage["prompt_tokens"] + usage["completion_tokens"] == simulator.stats.billed_tokens
    assert usage["charged_tokens"] == simulator.stats.billed_tokens


def test_a_part_whose_answers_stay_invalid_ends_failed_with_the_reason(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(sfn_retry_max_attempts=1)
    simulator.reconfigure(faults=["drop_rule", "drop_rule"])

    vid = submit(api, {"a.txt": "one line\n"}, [NO_SECRET, COPYRIGHT])["id"]
    done = wait_for_status(api, vid)

    result = all_results(api, vid)[0]
    assert done["status"] == "FAILED" and done["error"]["type"] == "parts_failed"
    assert result["status"] == "FAILED"
    assert result["error"]["type"] == "InvalidAnswer"
    assert "no verdict for rule" in result["error"]["message"]
    assert done["usage"]["attempts"] == 2


def test_a_cut_answer_is_asked_again_with_a_larger_allowance_and_never_parsed(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(completion_max_tokens=128, part_max_tokens=3000)
    text = _lines(60, {i: f"secret {i}" for i in range(1, 61)})

    vid = submit(api, {"many.txt": text}, [NO_SECRET])["id"]
    done = wait_for_status(api, vid)

    findings = _verdicts(all_results(api, vid)[0])["no-secret"]["findings"]
    assert done["status"] == "SUCCEEDED", done
    assert [f["line"] for f in findings] == list(range(1, 61))
    assert simulator.stats.cut_answers >= 1
    assert done["usage"]["model_calls"] == simulator.stats.cut_answers + 1
    assert done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"] == simulator.stats.billed_tokens


def test_an_answer_cut_even_at_the_cap_fails_the_part_without_retrying(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(completion_max_tokens=64, completion_max_tokens_cap=64, part_max_tokens=3000)
    vid = submit(api, {"many.txt": _lines(60, dict.fromkeys(range(1, 61), "secret"))}, [NO_SECRET])["id"]
    done = wait_for_status(api, vid)

    result = all_results(api, vid)[0]
    assert done["status"] == "FAILED"
    assert result["error"]["type"] == "AnswerTooLong"
    assert simulator.stats.requests == 1  # deterministic: not retried


def test_a_failed_combine_step_fails_the_file_and_retry_combines_only_it(
    make_api: MakeApi, simulator: SimulatorServer
) -> None:
    api = make_api(sfn_retry_max_attempts=1)
    simulator.reconfigure(faults=["combine:malformed", "combine:malformed"])
    vid = submit(
        api,
        {"big.txt": _lines(600, {2: "Copyright", 400: "secret"}), "small.txt": "Copyright\n"},
        [NO_SECRET, COPYRIGHT],
    )["id"]

    failed = wait_for_status(api, vid)
    results = {r["file"]: r for r in all_results(api, vid)}
    assert failed["status"] == "FAILED" and failed["error"]["type"] == "combine_failed"
    assert results["big.txt"]["status"] == "FAILED" and results["big.txt"]["error"]["type"] == "InvalidAnswer"
    assert all(v["passed"] is None for v in results["big.txt"]["rules"])  # undecided; the parts' findings are shown
    assert results["small.txt"]["status"] == "SUCCEEDED"
    part_calls = simulator.stats.part_calls

    assert api.post(f"/validations/{vid}/retry").status_code == 202
    done = wait_for_status(api, vid)

    verdicts = _verdicts(next(r for r in all_results(api, vid) if r["file"] == "big.txt"))
    assert done["status"] == "SUCCEEDED", done
    assert simulator.stats.part_calls == part_calls  # no part was judged again
    assert simulator.stats.combine_calls == 3
    assert verdicts["copyright"]["passed"] is True
    assert [f["line"] for f in verdicts["no-secret"]["findings"]] == [400]
