"""app/models/catalog.py, the validations' port to the list of models, against an in-memory SSM:
resolving a submission's model (the default for none, 422 naming `model` for one not listed),
read once per CONFIG_CACHE_SECONDS, and a new list stored with the default's targets in
`target-tpm` and `target-rpm`."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from app.aws.clients import AWSClients
from app.errors import Unprocessable, UpstreamError
from app.models.catalog import ModelCatalog
from core.models import ModelEntry
from tests.support.stack import settings_of


@dataclass
class _Ssm:
    """SSM Parameter Store's two calls the catalog makes, in memory."""

    values: dict[str, str]
    reads: int = 0
    writes: list[tuple[str, str]] = field(default_factory=list)

    async def get_parameters(self, Names: list[str]) -> dict[str, Any]:  # noqa: N803 - boto3's argument name
        self.reads += 1
        return {"Parameters": [{"Name": n, "Value": self.values[n]} for n in Names if n in self.values]}

    async def put_parameter(self, Name: str, Value: str, **_: Any) -> None:  # noqa: N803 - boto3's argument name
        self.values[Name] = Value
        self.writes.append((Name.rsplit("/", 1)[1], Value))


@dataclass
class _Clients:
    ssm: _Ssm


def _catalog(values: dict[str, str], cache_seconds: float = 60) -> tuple[ModelCatalog, _Ssm]:
    prefix = f"/m{uuid.uuid4().hex[:8]}"  # the cache is per parameter name: each test its own
    ssm = _Ssm({f"{prefix}/{k}": v for k, v in values.items()})
    settings = settings_of(ssm_prefix=prefix, openai_model="gpt-4o-mini", config_cache_seconds=cache_seconds)
    return ModelCatalog(cast(AWSClients, _Clients(ssm)), settings), ssm


TARGETS = {"target-tpm": "50000", "target-rpm": "500"}
LISTED = json.dumps(
    [
        {"name": "gpt-4o-mini", "tiers": ["standard", "flex"], "default": True},
        {"name": "o4-mini", "target_tpm": 200_000, "target_rpm": 2_000, "tiers": ["standard"], "default": False},
    ]
)


async def test_a_submission_without_a_model_gets_the_default_and_one_not_listed_a_422_naming_model() -> None:
    catalog, _ = _catalog({**TARGETS, "models": LISTED})

    default = await catalog.resolve(None)
    named = await catalog.resolve("o4-mini")
    with pytest.raises(Unprocessable) as refused:
        await catalog.resolve("gpt-4.1")

    assert (default.name, default.target_tpm, default.target_rpm) == ("gpt-4o-mini", 50_000, 500)
    assert named.target_tpm == 200_000 and named.family == "reasoning" and not named.allows("flex")
    assert refused.value.extra == {"field": "model"}
    assert "gpt-4o-mini, o4-mini" in refused.value.detail


async def test_without_the_parameter_the_configured_model_alone_is_offered() -> None:
    catalog, _ = _catalog(TARGETS)

    (entry,) = await catalog.entries()

    assert entry == ModelEntry("gpt-4o-mini", 50_000, 500, ("standard", "flex", "batch"), True)


async def test_the_list_is_read_once_per_cache_period_per_process() -> None:
    catalog, ssm = _catalog({**TARGETS, "models": LISTED})

    for name in (None, "o4-mini", None):
        await catalog.resolve(name)
    await catalog.catalog(fresh=True)  # the admin's views read it fresh

    assert ssm.reads == 2


async def test_a_new_list_stores_the_defaults_targets_in_the_deployment_wide_parameters() -> None:
    catalog, ssm = _catalog({**TARGETS, "models": LISTED})
    entries = [
        ModelEntry("gpt-4o-mini", 50_000, 500, ("standard",), False),
        ModelEntry("o4-mini", 300_000, 3_000, ("standard", "flex"), True),
    ]

    before, after = await catalog.replace(entries)

    assert before is not None and before.default.name == "gpt-4o-mini" and after.default.name == "o4-mini"
    written = dict(ssm.writes)
    assert written["target-tpm"] == "300000" and written["target-rpm"] == "3000"
    stored = json.loads(written["models"])
    assert stored[1] == {"name": "o4-mini", "tiers": ["standard", "flex"], "default": True}  # its targets: above
    assert (await catalog.resolve(None)).target_tpm == 300_000  # the process's cache was dropped


async def test_a_list_it_cannot_serve_is_refused_naming_the_field_and_nothing_is_written() -> None:
    catalog, ssm = _catalog({**TARGETS, "models": LISTED})
    entries = [ModelEntry("gpt-4o-mini", 50_000, 500, default=True), ModelEntry("o1-mini", 50_000, 500)]

    with pytest.raises(Unprocessable) as refused:
        await catalog.replace(entries)

    assert refused.value.extra == {"field": "models[1].name"} and ssm.writes == []


async def test_a_stored_list_edited_into_something_unusable_is_a_502_naming_the_parameter_until_replaced() -> None:
    catalog, _ = _catalog({**TARGETS, "models": '[{"name": "o4-mini"}]'})

    with pytest.raises(UpstreamError, match="/models"):
        await catalog.entries()
    before, _ = await catalog.replace([ModelEntry("gpt-4o-mini", 50_000, 500, default=True)])
    assert before is None and [e.name for e in await catalog.entries()] == ["gpt-4o-mini"]
