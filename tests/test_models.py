"""core/models.py: the admin's list of models, what it refuses (naming the field), how each
family is asked, and the stored form (the default's targets are the deployment-wide ones)."""

from __future__ import annotations

import json

import pytest

from core.models import Catalog, ModelEntry, ModelListError, UnknownModel, check, family, refusal


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o-mini", "chat"),
        ("gpt-4.1", "chat"),
        ("ft:gpt-4o-mini:acme::abc123", "chat"),
        ("meta-llama/Llama-3.1-8B-Instruct", "chat"),
        ("o1", "reasoning"),
        ("o3-mini", "reasoning"),
        ("o4-mini-2025-04-16", "reasoning"),
        ("gpt-5", "reasoning"),
        ("gpt-5-nano", "reasoning"),
        ("ft:o4-mini:acme::abc123", "reasoning"),
    ],
)
def test_reasoning_models_are_told_apart_by_name(name: str, expected: str) -> None:
    assert family(name) == expected


@pytest.mark.parametrize(
    "name",
    ["gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "o3", "o4-mini", "gpt-5-mini", "simulator", "ft:gpt-4.1:acme::x1"],
)
def test_models_that_answer_the_call_are_served(name: str) -> None:
    assert refusal(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("o1-mini", "system messages"),
        ("o1-preview-2024-09-12", "system messages"),
        ("o3-pro", "Responses API"),
        ("gpt-3.5-turbo", "structured outputs"),
        ("gpt-4", "structured outputs"),
        ("gpt-4-turbo", "structured outputs"),
        ("text-embedding-3-small", "not a chat"),
        ("gpt-4o-realtime-preview", "not a chat"),
        ("bad#name", "not a model name"),
        ("", "not a model name"),
    ],
)
def test_models_the_call_cannot_serve_are_refused_saying_why(name: str, why: str) -> None:
    assert why in (refusal(name) or "")


def _entry(name: str, default: bool = False, **fields: object) -> ModelEntry:
    values: dict[str, object] = {"name": name, "target_tpm": 100_000, "target_rpm": 1_000, "default": default}
    return ModelEntry.of({**values, **fields})


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([], "models"),
        ([_entry("gpt-4o-mini")], "models"),  # no default
        ([_entry("gpt-4o-mini", True), _entry("o4-mini", True)], "models[1].default"),
        ([_entry("gpt-4o-mini", True), _entry("gpt-4o-mini")], "models[1].name"),
        ([_entry("gpt-4o-mini", True), _entry("o4-mini"), _entry("gpt-3.5-turbo")], "models[2].name"),
        ([_entry("gpt-4o-mini", True, target_tpm=10)], "models[0].target_tpm"),
        ([_entry("gpt-4o-mini", True, target_rpm=0)], "models[0].target_rpm"),
        ([_entry("gpt-4o-mini", True, tiers=["standard", "standard"])], "models[0].tiers"),
        ([_entry("gpt-4o-mini", True, tiers=["turbo"])], "models[0].tiers"),
    ],
)
def test_a_list_that_cannot_be_served_is_refused_naming_the_field(entries: list[ModelEntry], field: str) -> None:
    with pytest.raises(ModelListError) as refused:
        check(entries)
    assert refused.value.field == field


def test_without_a_stored_list_the_configured_model_alone_is_offered_at_the_deployments_targets() -> None:
    for text in (None, "", "[]"):
        catalog = Catalog.parse(text, "gpt-4o-mini", 50_000, 500)
        (entry,) = catalog.entries
        assert (entry.name, entry.target_tpm, entry.target_rpm, entry.default) == ("gpt-4o-mini", 50_000, 500, True)
        assert entry.tiers == ("standard", "flex", "batch")


def test_the_stored_list_leaves_the_defaults_targets_to_the_deployment_wide_parameters() -> None:
    catalog = Catalog((_entry("gpt-4o-mini", True), _entry("o4-mini", tiers=["standard", "flex"])))
    stored = json.loads(catalog.stored())

    assert stored[0] == {"name": "gpt-4o-mini", "tiers": ["standard", "flex", "batch"], "default": True}
    assert stored[1]["target_tpm"] == 100_000
    # Read back with other deployment-wide targets: the default takes them, the others keep theirs.
    again = Catalog.parse(catalog.stored(), "ignored", 70_000, None)
    assert again.default.target_tpm == 70_000 and again.default.target_rpm is None
    assert again.get("o4-mini") == catalog.get("o4-mini")
    assert again.resolve(None).name == "gpt-4o-mini" and again.resolve("o4-mini").family == "reasoning"
    with pytest.raises(UnknownModel):
        again.resolve("gpt-4.1")


@pytest.mark.parametrize("text", ['{"name": "x"}', '[{"name": "o4-mini"}]', '["gpt-4o-mini"]', "not json"])
def test_a_stored_list_that_is_not_one_is_an_error(text: str) -> None:
    with pytest.raises(ValueError):
        Catalog.parse(text, "gpt-4o-mini", 50_000, 500)
