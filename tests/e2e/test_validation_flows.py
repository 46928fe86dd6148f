"""Whole validations through the API, the embedded Step Functions engine, the Lambdas and the simulator."""

from __future__ import annotations

import time

from tests.conftest import all_results, lines_document, set_parallelism, submit, wait_for, wait_for_status

NO_SECRET = {"id": "no-secret", "text": 'The file must not contain "secret".'}
HAS_ROW = {"id": "has-row", "text": 'Every part must contain "row".'}


def test_three_files_two_rules_succeed_with_per_file_per_rule_results(api, simulator):
    created = submit(
        api,
        {"clean.txt": lines_document(5), "leaky.csv": lines_document(6, marker_every=3), "notes.md": "row one\nrow two\n"},
        [NO_SECRET, HAS_ROW],
    )
    assert created["status"] == "RUNNING"
    assert created["links"]["self"] == f"/validations/{created['id']}"

    done = wait_for_status(api, created["id"])
    results = {r["file"]: r for r in all_results(api, created["id"])}

    assert done["status"] == "SUCCEEDED"
    assert done["progress"] == {"total": 3, "succeeded": 3, "failed": 0, "pending": 0}
    assert done["usage"]["prompt_tokens"] > 0 and done["usage"]["completion_tokens"] > 0
    assert set(results) == {"clean.txt", "leaky.csv", "notes.md"}
    assert all(r["status"] == "SUCCEEDED" and [v["id"] for v in r["rules"]] == ["no-secret", "has-row"] for r in results.values())
    leaky = {v["id"]: v for v in results["leaky.csv"]["rules"]}
    assert leaky["no-secret"]["passed"] is False
    assert [f["location"] for f in leaky["no-secret"]["findings"]] == ["line 3", "line 6"]
    assert leaky["has-row"] == {"id": "has-row", "passed": True, "findings": []}
    assert {v["id"]: v["passed"] for v in results["clean.txt"]["rules"]} == {"no-secret": True, "has-row": True}
    assert simulator.stats.part_calls == 3


def test_two_hundred_chunks_at_parallelism_five_never_exceed_five_calls_in_flight(make_api, aws, settings, simulator):
    api = make_api(chunk_max_tokens=100)
    set_parallelism(aws, settings, 5)
    simulator.reconfigure(latency_seconds=0.2)  # long enough that five calls overlap even on a loaded machine
    documents = {f"part-{i}.txt": lines_document(8 * 50) for i in range(4)}

    created = submit(api, documents, [NO_SECRET])
    done = wait_for_status(api, created["id"], timeout=240)

    assert done["progress"]["total"] >= 200
    assert done["status"] == "SUCCEEDED", (done, [r.get("error") for r in all_results(api, created["id"])])
    assert simulator.stats.part_calls == done["progress"]["total"]
    assert simulator.stats.peak_in_flight <= 5
    assert simulator.stats.peak_in_flight == 5  # the limit was reached: it is what held calls back


def test_every_chunk_finishes_when_thirty_percent_of_calls_get_429(make_api, simulator):
    # Eight retries: a chunk fails only if nine calls in a row get 429 (0.3^9, about 2e-5).
    api = make_api(chunk_max_tokens=100, sfn_retry_max_attempts=8)
    simulator.reconfigure(rate_limit_rate=0.3, seed=7)

    created = submit(api, {"a.txt": lines_document(60), "b.txt": lines_document(60)}, [NO_SECRET])
    done = wait_for_status(api, created["id"], timeout=240)

    assert done["status"] == "SUCCEEDED", done
    assert done["progress"]["succeeded"] == done["progress"]["total"] >= 10
    assert simulator.stats.rate_limited > 0  # retries did the work
    assert simulator.stats.part_calls == done["progress"]["total"]  # each part answered once
    assert simulator.stats.requests == simulator.stats.part_calls + simulator.stats.combine_calls + simulator.stats.rate_limited


def test_cancel_mid_run_keeps_partial_results_and_starts_no_call_after_the_stop(make_api, aws, settings, simulator):
    api = make_api(chunk_max_tokens=100)
    set_parallelism(aws, settings, 2)
    simulator.reconfigure(latency_seconds=0.3)
    created = submit(api, {"long.txt": lines_document(300)}, [NO_SECRET])
    vid = created["id"]
    wait_for(lambda: api.get(f"/validations/{vid}").json()["progress"]["succeeded"] >= 3, what="some chunks done")

    cancelled = api.delete(f"/validations/{vid}")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] in ("CANCELLING", "CANCELLED")
    final = wait_for_status(api, vid, statuses=("CANCELLED",))
    settled_at = time.monotonic()
    wait_for(lambda: simulator.stats.in_flight == 0, what="in-flight calls to return")
    time.sleep(1.0)  # several call durations: a chunk scheduled after the stop would have started

    assert all(started <= settled_at for started in simulator.stats.started)
    assert final["finished_at"] is not None
    after = api.get(f"/validations/{vid}").json()  # calls in flight at the stop may have stored results
    assert after["status"] == "CANCELLED"
    assert 3 <= after["progress"]["succeeded"] < after["progress"]["total"]
    assert after["progress"]["succeeded"] == simulator.stats.part_calls
    results = all_results(api, vid)
    assert results[0]["chunks"]["succeeded"] == after["progress"]["succeeded"]
    assert results[0]["rules"] and results[0]["rules"][0]["id"] == "no-secret"
    assert api.delete(f"/validations/{vid}").json()["status"] == "CANCELLED"  # repeated DELETE, same answer
    history = api.get(f"/validations/{vid}/history", params={"limit": 100}).json()
    assert history["events"][0]["type"] == "ExecutionStarted"


def test_delete_on_an_ended_validation_is_409(api):
    created = submit(api, {"a.txt": "row 1\n"}, [NO_SECRET])
    wait_for_status(api, created["id"])

    answer = api.delete(f"/validations/{created['id']}")

    assert answer.status_code == 409
    assert answer.headers["content-type"] == "application/problem+json"


def test_failed_chunks_make_the_validation_failed_with_reasons_and_retry_is_refused_while_running(make_api, simulator):
    api = make_api(chunk_max_tokens=100, sfn_retry_max_attempts=1)
    simulator.reconfigure(error_rate=1.0)  # every call fails: chunks exhaust their retries
    vid = submit(api, {"a.txt": lines_document(30)}, [NO_SECRET])["id"]

    failed = wait_for_status(api, vid, timeout=240)

    assert failed["status"] == "FAILED"
    assert failed["error"]["type"] == "chunks_failed"
    assert failed["progress"]["failed"] == failed["progress"]["total"] >= 2
    result = all_results(api, vid)[0]
    assert result["status"] == "FAILED"
    assert result["error"]["type"] == "UpstreamError"
    assert "500" in result["error"]["message"]

    assert api.post(f"/validations/{vid}/retry").status_code == 202
    refused = api.post(f"/validations/{vid}/retry")  # the rerun is RUNNING now
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert wait_for_status(api, vid, timeout=240)["run"] == 2


def test_retry_after_partial_failure_redoes_nothing_that_succeeded(make_api, simulator):
    api = make_api(chunk_max_tokens=100, sfn_retry_max_attempts=0)  # a failed call fails its chunk
    simulator.reconfigure(error_rate=0.5, seed=3)
    vid = submit(api, {"a.txt": lines_document(80)}, [NO_SECRET])["id"]
    first = wait_for_status(api, vid, timeout=240)
    assert first["status"] == "FAILED"
    assert 0 < first["progress"]["failed"] < first["progress"]["total"]
    calls_before = simulator.stats.part_calls
    simulator.reconfigure(error_rate=0.0)

    retried = api.post(f"/validations/{vid}/retry")
    assert retried.status_code == 202
    assert retried.json()["run"] == 2
    done = wait_for_status(api, vid, timeout=240)

    total = first["progress"]["total"]
    assert done["status"] == "SUCCEEDED"
    assert done["progress"] == {"total": total, "succeeded": total, "failed": 0, "pending": 0}
    assert simulator.stats.part_calls - calls_before == first["progress"]["failed"]  # only the failed ones
    assert api.post(f"/validations/{vid}/retry").status_code == 409  # nothing failed any more


def test_five_hundred_chunk_validation_stays_inside_step_functions_limits(make_api, aws, settings, simulator):
    api = make_api(chunk_max_tokens=100)
    set_parallelism(aws, settings, 10)
    documents = {f"part-{i}.log": lines_document(800, marker_every=97) for i in range(5)}

    created = submit(api, documents, [NO_SECRET])
    done = wait_for_status(api, created["id"], timeout=400)

    failures = {} if done["status"] == "SUCCEEDED" else {"error": done.get("error"), "chunks": [r.get("error") for r in all_results(api, created["id"]) if r.get("error")][:5]}
    assert done["status"] == "SUCCEEDED", failures
    assert done["progress"]["total"] >= 500
    assert simulator.stats.part_calls == done["progress"]["total"]
    sfn = aws.client("stepfunctions")
    machine = aws.machine_arn(settings.state_machine_name)
    execution = sfn.describe_execution(executionArn=f"{machine.replace(':stateMachine:', ':execution:')}:{created['id']}")
    assert len(execution["input"].encode()) < 256 * 1024
    events = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)
    count = len(events["events"])
    while "nextToken" in events:
        events = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000, nextToken=events["nextToken"])
        count += len(events["events"])
    assert count < 25_000
    flagged = [r for r in all_results(api, created["id"]) if not r["rules"][0]["passed"]]
    assert len(flagged) == 5  # every file has marker lines
