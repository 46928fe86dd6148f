"""The Lambdas' cached SSM values (lambdas/common/live_config.py): once they expire, one
thread reads them again while the others keep them (an invocation runs up to k calls)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from lambdas.common import live_config
from lambdas.common.config import LambdaConfig

WAIT = 30  # seconds: a bound on a broken test, never a measurement


class _Ssm:
    """GetParameters answering max-parallelism `value`; one read may be held until released."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.value, self.reads = prefix, 8, 0
        self.entered, self.release = threading.Event(), threading.Event()
        self.hold = False

    def get_parameters(self, Names: list[str]) -> dict[str, Any]:  # noqa: N803 - boto3's keyword
        self.reads += 1
        if self.hold:  # the first read after `hold` waits for the test
            self.hold = False
            self.entered.set()
            assert self.release.wait(WAIT)
        values = {"max-parallelism": self.value, "target-tpm": 50_000, "throttle-threshold": 0.9}
        return {"Parameters": [{"Name": f"{self.prefix}/{n}", "Value": str(v)} for n, v in values.items()]}


def test_expired_values_are_read_again_by_one_thread_while_the_others_keep_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = f"/t{uuid.uuid4().hex[:8]}"
    config = LambdaConfig(
        validations_table="v", parts_table="c", uploads_bucket="u", ssm_prefix=prefix, config_cache_seconds=5
    )
    ssm, now = _Ssm(prefix), [0.0]
    monkeypatch.setattr(live_config, "_ssm", lambda endpoint, region: ssm)

    def clock() -> float:
        return now[0]

    assert live_config.limits(config, clock).max_parallelism == 8  # the first read
    now[0], ssm.value, ssm.hold = 6.0, 2, True  # expired; an admin lowered it meanwhile
    reader = threading.Thread(target=live_config.limits, args=(config, clock))
    reader.start()
    assert ssm.entered.wait(WAIT)  # one thread is reading SSM...
    others = [live_config.limits(config, clock).max_parallelism for _ in range(5)]  # ...the others do not
    ssm.release.set()
    reader.join(WAIT)

    assert others == [8] * 5
    assert ssm.reads == 2
    assert live_config.limits(config, clock).max_parallelism == 2  # the new value, cached
    assert ssm.reads == 2
