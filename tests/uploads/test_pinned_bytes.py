"""An uploaded file's parts are read from exactly the object the plan step read: bytes PUT again
through the upload's still-valid presigned URL after planning fail the parts not yet read with
`file_changed`, once and without a retry, and are never judged as they are then."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from local.aws import upload_patches
from local.simulator.server import SimulatorServer
from tests.support.stack import HeldCalls, MakeApi, all_results, make_user, wait_for
from tests.uploads.test_api import declare
from tests.uploads.test_validations import NO_SECRET, _as, ended


def lines(count: int, secret_at: set[int]) -> bytes:
    """Lines of the same length whatever holds the secret."""
    return "".join(
        f"row {i:03d}: {'secret' if i in secret_at else 'public'} value\n" for i in range(1, count + 1)
    ).encode()


def test_bytes_overwritten_after_the_plan_fail_the_unread_parts_with_file_changed(
    make_api: MakeApi, simulator: SimulatorServer, hold_calls: Callable[[int], HeldCalls]
) -> None:
    upload_patches.apply()  # once per process; a no-op where the embedded AWS applies it itself
    # One call at a time, in one invocation: the parts are read one after the other.
    api = make_api(part_max_tokens=100, map_concurrency_ceiling=1, sfn_retry_max_attempts=1)
    assert api.patch("/admin/parallelism", json={"max_parallelism": 1}).status_code == 200
    user = make_user(api)
    planned = lines(60, {5})
    overwritten = lines(60, {5, 40, 55})
    assert len(overwritten) == len(planned)
    (ticket,) = declare(api, user, {"name": "app.log", "size": len(planned)})
    assert httpx.put(ticket["url"], content=planned, headers=ticket["headers"]).status_code == 200
    held = hold_calls(0)

    created = api.post(
        "/validations", json={"rules": [NO_SECRET], "uploads": [ticket["upload_id"]], "reuse": False}, headers=user[1]
    )
    assert created.status_code == 202, created.text
    vid = created.json()["id"]
    wait_for(lambda: held.arrived == 1, timeout=120, what="the first part's call")  # planned, one part read
    # The same presigned URL, still valid: the object is replaced by bytes of the same size.
    assert httpx.put(ticket["url"], content=overwritten, headers=ticket["headers"]).status_code == 200
    held.release()

    done = ended(api, user, vid)
    assert done["status"] == "FAILED", done
    total, failed = done["progress"]["total"], done["progress"]["failed"]
    assert total >= 3 and failed == total - 1, done["progress"]  # all but the part read before the PUT
    assert simulator.stats.part_calls == 1  # no part of the new bytes was asked about
    (result,) = all_results(_as(api, user), vid)
    assert result["status"] == "FAILED"
    assert result["error"]["type"] == "file_changed", result["error"]
    assert "overwritten after it was planned" in result["error"]["message"]
