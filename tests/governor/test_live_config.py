"""The Lambdas' live settings (lambdas/common/live_config.py): read from the mirror in the
governor's budget partition, never from SSM per Lambda; copied from SSM by the admin PATCH at once
and by the reconciler after a direct edit; once they expire, one thread reads them again
while the others keep them (an invocation runs up to k calls)."""

from __future__ import annotations

import threading
from typing import Any

from app.settings import Settings
from core import governor as g
from core.dynamo import from_item
from lambdas.common.live_config import LiveConfig, sync
from tests.governor.fleet import deployment
from tests.support.stack import Aws, MakeApi

WAIT = 30  # seconds: a bound on a broken test, never a measurement


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Held:
    """A DynamoDB client whose Query answers the mirror with max-parallelism `value`; one read
    may be held until released."""

    def __init__(self) -> None:
        self.value, self.reads = 8, 0
        self.entered, self.release = threading.Event(), threading.Event()
        self.hold = False

    def query(self, **_: Any) -> dict[str, Any]:
        self.reads += 1
        if self.hold:  # the first read after `hold` waits for the test
            self.hold = False
            self.entered.set()
            assert self.release.wait(WAIT)
        values = {"max-parallelism": self.value, "target-tpm": 50_000, "throttle-threshold": 0.9}
        item = {g.live_attribute(n): {"S": str(v)} for n, v in values.items()}
        return {"Items": [{"pk": {"S": "budget"}, "sk": {"S": "tokens"}, **item}]}


def test_expired_values_are_read_again_by_one_thread_while_the_others_keep_them() -> None:
    dynamodb, clock = _Held(), _Clock()
    live = LiveConfig(dynamodb, ssm=None, table="governor", prefix="/p", cache_seconds=5, clock=clock)

    assert live.limits().max_parallelism == 8  # the first read
    clock.now, dynamodb.value, dynamodb.hold = 6.0, 2, True  # expired; an admin lowered it meanwhile
    reader = threading.Thread(target=live.limits)
    reader.start()
    assert dynamodb.entered.wait(WAIT)  # one thread is reading the mirror...
    others = [live.limits().max_parallelism for _ in range(5)]  # ...the others do not
    dynamodb.release.set()
    reader.join(WAIT)

    assert others == [8] * 5
    assert dynamodb.reads == 2
    assert live.limits().max_parallelism == 2  # the new value, cached
    assert dynamodb.reads == 2


class _Counted:
    """Count the AWS operations a botocore client makes (its event hooks), by operation name."""

    def __init__(self, client: Any) -> None:
        self.calls: dict[str, int] = {}
        client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1


def test_ssm_reads_do_not_grow_with_the_number_of_lambdas(aws: Aws, settings: Settings) -> None:
    """Warm Lambdas (each its own cache) ask for the settings over a minute: SSM is read once,
    to copy the parameters the first time, for one Lambda or forty."""
    config = deployment(aws, settings, {"max-parallelism": 7})
    ssm, dynamodb = aws.new_client("ssm"), aws.new_client("dynamodb")
    ssm_calls, dynamodb_calls = _Counted(ssm), _Counted(dynamodb)
    clock = _Clock()

    def warm(lambdas: int) -> set[int]:
        fleet = [
            LiveConfig(dynamodb, ssm, config.governor_table, config.ssm_prefix, cache_seconds=5, clock=clock)
            for _ in range(lambdas)
        ]
        seen = set()
        for step in range(60):  # a minute, every Lambda asking each second
            clock.now = step + 1_000.0 * lambdas
            seen |= {live.limits().max_parallelism for live in fleet}
        return seen

    assert warm(1) == {7}
    after_one = dict(ssm_calls.calls)
    assert warm(40) == {7}

    assert after_one == {"GetParameters": 1} and ssm_calls.calls == after_one  # the one copy, then none
    # Each Lambda reads the mirror (one Query) once per cache period (12 a minute): DynamoDB, not SSM.
    assert dynamodb_calls.calls["Query"] == 2 + 12 * (1 + 40)  # + the copy's read and its check


def test_a_patch_reaches_warm_lambdas_within_their_cache_and_a_direct_ssm_edit_after_a_reconciler_pass(
    make_api: MakeApi, aws: Aws, settings: Settings
) -> None:
    api = make_api()
    config = deployment(aws, settings, {})
    clock = _Clock()
    warm = LiveConfig(
        aws.new_client("dynamodb"), aws.new_client("ssm"), config.governor_table, config.ssm_prefix, 5, clock
    )
    first = int(aws.client("ssm").get_parameter(Name=f"{settings.ssm_prefix}/target-rpm")["Parameter"]["Value"])
    assert warm.limits().target_rpm == first  # copied on the first read

    patched = api.patch("/admin/parallelism", json={"target_rpm": 60})
    assert patched.status_code == 200 and patched.json()["target_rpm"] == 60
    assert patched.json()["effective"]["in_sync"] is True
    assert warm.limits().target_rpm == first  # cached...
    clock.now += 5
    assert warm.limits().target_rpm == 60  # ...until it expires: the PATCH copied it at once

    aws.client("ssm").put_parameter(
        Name=f"{settings.ssm_prefix}/target-rpm", Value="90", Type="String", Overwrite=True
    )  # an edit straight in SSM: the copy stays behind...
    clock.now += 5
    assert warm.limits().target_rpm == 60
    assert api.get("/admin/parallelism").json()["effective"]["in_sync"] is False
    report = api.post("/admin/reconcile")  # ...until the reconciler's pass (on its schedule, or now)
    assert report.status_code == 200 and report.json()["parameters"] == ["target-rpm"]
    clock.now += 5
    assert warm.limits().target_rpm == 90
    assert api.get("/admin/parallelism").json()["effective"]["in_sync"] is True


def test_target_rpm_is_patched_range_checked_and_audited(make_api: MakeApi, aws: Aws, settings: Settings) -> None:
    api = make_api()
    first = api.get("/admin/parallelism").json()["target_rpm"]
    refused = [api.patch("/admin/parallelism", json={"target_rpm": v}) for v in (0, 10_000_001, "many")]
    changed = api.patch("/admin/parallelism", json={"target_rpm": 3_000, "throttle_threshold": 0.8})

    for answer in refused:
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["errors"][0]["field"].endswith("target_rpm"), answer.json()
    stored = aws.client("ssm").get_parameter(Name=f"{settings.ssm_prefix}/target-rpm")["Parameter"]["Value"]
    assert stored == "3000"
    view = changed.json()
    assert view["target_rpm"] == 3_000
    assert view["effective"]["requests_per_window"] == 2_400  # 3,000 × 0.8
    assert view["effective"]["tokens_per_request"] == -(-view["target_tpm"] // 3_000)
    entry = api.get("/admin/audit").json()["items"][0]
    assert entry["action"] == "parallelism.update"
    assert (entry["old"]["target_rpm"], entry["new"]["target_rpm"]) == (first, 3_000)
    budget = aws.client("dynamodb").get_item(
        TableName=settings.table("governor"), Key={"pk": {"S": "budget"}, "sk": {"S": "tokens"}}
    )["Item"]
    mirrored = g.Mirror.of(from_item(budget)).limits()
    assert (mirrored.target_rpm, mirrored.throttle_threshold) == (3_000, 0.8)  # the validators' copy


def test_a_copy_read_from_ssm_before_a_newer_change_never_overwrites_it(aws: Aws, settings: Settings) -> None:
    """Two writers race (a reconciler pass and a PATCH's copy): SSM's versions decide, not the order
    in which the writes arrive."""
    config = deployment(aws, settings, {"max-parallelism": 3})
    ssm, dynamodb = aws.new_client("ssm"), aws.new_client("dynamodb")
    table, prefix, key = config.governor_table, config.ssm_prefix, {"pk": {"S": "budget"}, "sk": {"S": "tokens"}}
    assert "max-parallelism" in sync(dynamodb, table, ssm, prefix)

    def put(value: int) -> None:
        ssm.put_parameter(Name=f"{prefix}/max-parallelism", Value=str(value), Type="String", Overwrite=True)

    put(9)  # the slow writer reads SSM and the copy now...
    slow_ssm = _AsOf(ssm.get_parameters(Names=[f"{prefix}/{n}" for n in g.PARAMETERS]))
    slow_dynamodb = _StaleReads(dynamodb, dynamodb.query(**g.mirror_query(table))["Items"])
    put(4)  # ...an admin changes it again, and that is copied first
    assert sync(dynamodb, table, ssm, prefix) == ["max-parallelism"]

    assert sync(slow_dynamodb, table, slow_ssm, prefix) == []  # its write of 9 is refused
    assert slow_dynamodb.writes == 1
    item = dynamodb.get_item(TableName=table, Key=key)["Item"]
    assert g.Mirror.of(from_item(item)).limits().max_parallelism == 4


class _AsOf:
    """SSM as a slow writer saw it."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def get_parameters(self, **_: Any) -> dict[str, Any]:
        return self.answer


class _StaleReads:
    """DynamoDB whose first read of the mirror answers its items as they were; writes go through."""

    def __init__(self, client: Any, items: list[dict[str, Any]]) -> None:
        self.client, self.writes = client, 0
        self.stale: list[dict[str, Any]] | None = items

    def query(self, **request: Any) -> dict[str, Any]:
        if self.stale is not None:
            stale, self.stale = self.stale, None
            return {"Items": stale}
        answer: dict[str, Any] = self.client.query(**request)
        return answer

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.writes += 1
        answer: dict[str, Any] = self.client.update_item(**request)
        return answer
