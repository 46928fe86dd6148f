"""An uploaded log planned in ranges over several PlanFile invocations (PlanMore) validates
like the same text sent inline: the same parts, the same verdicts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from local.aws import lambda_router, upload_patches
from local.aws.server import EmbeddedAWS
from local.simulator.app import SimulatorConfig
from local.simulator.server import SimulatorServer
from tests.support.stack import ADMIN, local_settings, make_user
from tests.uploads.test_validations import _as, by_file, ended, lines, uploaded, validate

RANGE = 4096


@pytest.fixture(scope="module")
def ranged_api(embedded_aws: EmbeddedAWS) -> Iterator[tuple[Any, str]]:
    """The API whose plan step reads 4 KiB ranges, one per invocation; and the plan function's name."""
    upload_patches.apply()
    with SimulatorServer(SimulatorConfig(latency_seconds=0.01)) as simulator:
        settings = local_settings(
            embedded_aws.endpoint_url, simulator, letter="r", plan_range_bytes=RANGE, plan_invocation_bytes=RANGE
        )
        with TestClient(create_app(settings)) as client:
            client.headers.update(ADMIN)
            yield client, f"{settings.name_prefix}-plan-files"


@pytest.mark.slow(20)
def test_an_upload_planned_over_several_invocations_is_judged_like_the_same_text_inline(
    ranged_api: tuple[Any, str],
) -> None:
    api, plan_function = ranged_api
    user = make_user(api)
    data = lines(600, {5, 333, 598})  # ~17 KiB: a check pass, then about five ranges of parts
    upload_id = uploaded(api, user, "app.log", data)
    before = lambda_router.invocations().get(plan_function, 0)

    created = validate(api, user, {"uploads": [upload_id]})
    done = ended(api, user, created["id"])
    invocations = lambda_router.invocations().get(plan_function, 0) - before
    inline = validate(api, user, {"documents": [{"name": "app.log", "content": data.decode()}]})
    inline_done = ended(api, user, inline["id"])

    assert done["status"] == "SUCCEEDED", done
    assert invocations - 1 >= 3  # PlanFile rounds, then Planned
    assert done["progress"]["total"] == inline_done["progress"]["total"] > 1
    result = by_file(api, user, created["id"])["app.log"]
    assert result["rules"] == by_file(api, user, inline["id"])["app.log"]["rules"]
    assert [f["line"] for f in result["rules"][0]["findings"]] == [5, 333, 598]
    assert _as(api, user).get(f"/validations/{created['id']}").json()["files"][0]["parts"] > 1
