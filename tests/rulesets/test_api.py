"""`/rulesets` against DynamoDB: who reads and writes which set (owner, other user, admin, shared),
immutable versions, idempotent pushes, limits and bad input (422 naming the limit), 404s, retirement,
the audit trail, and `RulesetService.resolve` as a submission's `ruleset` uses it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from app.aws.clients import open_clients
from app.errors import AppError, Conflict, NotFound, Unprocessable
from app.identity.principal import Principal
from app.rulesets.records import Version
from app.rulesets.service import RulesetService, parse_reference
from app.rulesets.store import Refused, RulesetStore
from app.settings import Settings
from app.validations.intake import Rule, RulesetVersion
from core.clock import now_iso
from tests.support.stack import make_user

RULES: list[dict[str, Any]] = [
    {
        "id": "no-secret",
        "text": 'The file must not contain "secret".',
        "examples": [
            {"text": "id,note\n1,the secret\n", "violates": True, "lines": [2]},
            {"text": "id,note\n1,fine\n", "violates": False},
        ],
    },
    {"id": "polite", "text": "Be polite.", "examples": []},
]


def unique(prefix: str = "rs") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(api: Any, name: str, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    answer = api.post("/rulesets", json={"name": name, "rules": RULES, **body}, headers=headers or {})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def refused(answer: Any, status: int, field: str | None = None, limit: str | None = None) -> dict[str, Any]:
    """The problem+json of a refusal, checked for its status and the field (and limit) it names."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = answer.json()
    if field is not None:
        assert problem.get("field") == field or any(e["field"] == field for e in problem.get("errors", [])), problem
    if limit is not None:
        assert problem["limit"] == limit and isinstance(problem["limit_value"], int), problem
    return problem


def test_who_reads_and_writes_which_set_owner_other_user_admin_and_shared(tables_api: Any) -> None:
    api = tables_api
    alice, alice_auth = make_user(api)
    bob, bob_auth = make_user(api)
    name = unique()

    mine = api.post("/rulesets", json={"name": name, "description": "PII", "rules": RULES}, headers=alice_auth)
    assert mine.status_code == 201 and mine.headers["location"] == f"/rulesets/{name}/versions/1"
    assert (mine.json()["owner"], mine.json()["version"], mine.json()["reference"]) == (alice, 1, f"{name}@1")
    assert api.get(f"/rulesets/{name}", headers=alice_auth).json()["latest_version"] == 1

    # Another user: as if it did not exist, for reads, writes and tests alike.
    for method, path in (
        ("GET", f"/rulesets/{name}"),
        ("GET", f"/rulesets/{name}/versions/1"),
        ("POST", f"/rulesets/{name}/versions"),
        ("DELETE", f"/rulesets/{name}"),
        ("POST", f"/rulesets/{name}/versions/1/test"),
        ("GET", f"/rulesets/{name}/versions/1/test"),
    ):
        body = {"rules": RULES} if path.endswith("/versions") else None
        refused(api.request(method, path, headers=bob_auth, json=body), 404, "name")
    refused(api.get(f"/rulesets/{name}", params={"owner": alice}, headers=bob_auth), 403, "owner")
    # Names are per owner: bob may have his own set of that name.
    assert create(api, name, bob_auth)["owner"] == bob
    assert [r["owner"] for r in api.get("/rulesets", headers=bob_auth).json()["items"] if r["name"] == name] == [bob]

    # Admins address anyone's set with `owner`, writes included.
    assert api.get(f"/rulesets/{name}", params={"owner": alice}).json()["owner"] == alice
    assert [r["name"] for r in api.get("/rulesets", params={"owner": alice}).json()["items"]] == [name]
    pushed = api.post(
        f"/rulesets/{name}/versions", params={"owner": alice}, json={"rules": RULES, "description": "by an admin"}
    )
    assert pushed.status_code == 201 and (pushed.json()["owner"], pushed.json()["created_by"]) == (alice, "admin")

    # Sharing: only an admin's own sets. A shared set is read (and listed) by every user, written by its owner.
    refused(api.post("/rulesets", json={"name": unique(), "rules": RULES, "shared": True}, headers=alice_auth),
            403, "shared")  # fmt: skip
    refused(api.post("/rulesets", params={"owner": alice}, json={"name": unique(), "rules": RULES, "shared": True}),
            403, "shared")  # fmt: skip
    shared = unique("shared")
    create(api, shared, shared=True)
    assert api.get(f"/rulesets/{shared}", headers=bob_auth).json()["owner"] == "admin"
    assert api.get(f"/rulesets/{shared}/versions/1", headers=bob_auth).json()["rules"][0]["id"] == "no-secret"
    listed = api.get("/rulesets", headers=bob_auth).json()["items"]
    assert {(r["owner"], r["name"], r["shared"]) for r in listed} >= {(bob, name, False), ("admin", shared, True)}
    refused(api.post(f"/rulesets/{shared}/versions", json={"rules": RULES}, headers=bob_auth), 404, "name")
    refused(api.delete(f"/rulesets/{shared}", headers=bob_auth), 404, "name")
    refused(api.post(f"/rulesets/{shared}/versions/1/test", headers=bob_auth), 403, "name")  # read, not write

    # The caller's own set comes first: bob's set of the shared name shadows the shared one for him.
    create(api, shared, bob_auth)
    assert api.get(f"/rulesets/{shared}", headers=bob_auth).json()["owner"] == bob
    # One set per shared name: another admin cannot share a set under it.
    carol, carol_auth = make_user(api, role="admin")
    refused(api.post("/rulesets", json={"name": shared, "rules": RULES, "shared": True}, headers=carol_auth),
            409, "shared")  # fmt: skip
    assert create(api, shared, carol_auth)["owner"] == carol  # unshared, it is carol's own

    # Stop sharing (the same content: no new version); bob still sees his own, alice sees none.
    stopped = api.post(f"/rulesets/{shared}/versions", json={"rules": RULES, "shared": False})
    assert stopped.status_code == 200 and stopped.json()["version"] == 1
    refused(api.get(f"/rulesets/{shared}", headers=alice_auth), 404, "name")
    assert api.get(f"/rulesets/{shared}", headers=bob_auth).json()["owner"] == bob

    # All of it is in the audit trail.
    entries = api.get("/admin/audit", params={"limit": 100}).json()["items"]
    done = {(e["actor"], e["action"], e["target"]) for e in entries}
    assert {
        (alice, "ruleset.create", f"{alice}/{name}@1"),
        ("admin", "ruleset.version", f"{alice}/{name}@2"),
        ("admin", "ruleset.create", f"admin/{shared}@1"),
        ("admin", "ruleset.share", f"admin/{shared}"),
        ("admin", "ruleset.unshare", f"admin/{shared}"),
    } <= done


def test_versions_never_change_and_a_push_of_equal_content_answers_the_latest(
    tables_api: Any, tables_settings: Settings
) -> None:
    api = tables_api
    _, auth = make_user(api)
    name = unique()
    first = create(api, name, auth, description="v1")

    again = api.post(f"/rulesets/{name}/versions", json={"rules": RULES, "description": "v1"}, headers=auth)
    assert again.status_code == 200 and again.json() == first  # the same version, nothing written

    changed = [{**RULES[0], "examples": RULES[0]["examples"][:1]}, RULES[1]]  # only an example less
    second = api.post(f"/rulesets/{name}/versions", json={"rules": changed, "description": "v1"}, headers=auth)
    assert second.status_code == 201 and second.json()["version"] == 2
    assert second.json()["digest"] != first["digest"]
    third = api.post(f"/rulesets/{name}/versions", json={"rules": changed, "description": "v3"}, headers=auth)
    assert third.status_code == 201 and third.json()["version"] == 3  # the description is content too

    assert api.get(f"/rulesets/{name}/versions/1", headers=auth).json() == first
    detail = api.get(f"/rulesets/{name}", params={"limit": 2}, headers=auth).json()
    assert [v["version"] for v in detail["versions"]] == [3, 2] and detail["next_cursor"]
    rest = api.get(f"/rulesets/{name}", params={"limit": 2, "cursor": detail["next_cursor"]}, headers=auth).json()
    assert [v["version"] for v in rest["versions"]] == [1] and rest["versions"][0]["examples"] == 2
    refused(api.get(f"/rulesets/{name}", params={"cursor": "bm9wZQ"}, headers=auth), 400, "cursor")

    # The store's conditions: a stale read cannot move `latest`, and a written version is never overwritten.
    async def stale_writes() -> None:
        async with store_of(tables_settings) as store:
            before = await store.get_set(first["owner"], name)
            assert before is not None and before.latest == 3
            rewrite = Version(first["owner"], name, 2, "rewritten", (), "x", now_iso(), "mallory")
            assert await store.add_version(replace(before, latest=1), rewrite, now_iso()) is Refused.MOVED
            assert await store.add_version(before, rewrite, now_iso()) is Refused.MOVED

    run(stale_writes())
    assert api.get(f"/rulesets/{name}/versions/2", headers=auth).json() == second.json()
    assert api.get(f"/rulesets/{name}", headers=auth).json()["latest_version"] == 3


def body_with(**rule: Any) -> dict[str, Any]:
    return {"name": unique(), "rules": [{"id": "r", "text": "Be polite.", **rule}]}


def examples(count: int, text: str = "a line\n") -> list[dict[str, Any]]:
    return [{"text": text, "violates": False} for _ in range(count)]


def test_limits_and_bad_input_are_refused_naming_the_field_and_the_limit(
    tables_api: Any, tables_settings: Settings
) -> None:
    api, s = tables_api, tables_settings
    post = lambda body: api.post("/rulesets", json=body)  # noqa: E731 - a short alias for the table below

    too_many_rules = {"name": unique(), "rules": [{"id": f"r{i}", "text": "x"} for i in range(s.ruleset_max_rules + 1)]}
    refused(post(too_many_rules), 422, "rules", "ruleset_max_rules")
    refused(post(body_with(examples=examples(s.ruleset_max_examples + 1))), 422, "rules[0].examples",
            "ruleset_max_examples")  # fmt: skip
    big = "x" * (s.ruleset_max_example_bytes - 1) + "é"  # one byte over, counted in UTF-8 bytes
    refused(post(body_with(examples=[{"text": big, "violates": False}])), 422, "rules[0].examples[0].text",
            "ruleset_max_example_bytes")  # fmt: skip
    refused(post(body_with(text="x" * (s.max_rule_chars + 1))), 422, "rules[0].text", "max_rule_chars")
    per_rule = s.ruleset_max_examples
    fill = [
        {"id": f"r{i}", "text": "x", "examples": examples(per_rule, "a")} for i in range(s.max_files // per_rule + 1)
    ]
    all_examples = {"name": unique(), "rules": fill}
    refused(post(all_examples), 422, "rules", "max_files")

    refused(post({"name": unique(), "rules": []}), 422, "rules")
    refused(post({"name": unique(), "rules": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}), 422, "rules")
    refused(post(body_with(text="  ")), 422, "rules[0].text")
    refused(post(body_with(examples=[{"text": " \n", "violates": True}])), 422, "rules[0].examples[0].text")
    refused(post(body_with(examples=[{"text": "a\x00b", "violates": True}])), 422, "rules[0].examples[0].text")
    refused(post(body_with(examples=[{"text": "a\n", "violates": False, "lines": [1]}])), 422,
            "rules[0].examples[0].lines")  # fmt: skip
    refused(post(body_with(examples=[{"text": "a\nb\n", "violates": True, "lines": [3]}])), 422,
            "rules[0].examples[0].lines")  # fmt: skip
    for name in ("Upper", "with@version", "a" * 65, "sp ace", ""):
        refused(post({"name": name, "rules": [{"id": "r", "text": "x"}]}), 422, "body.name")
    refused(api.get("/rulesets/Upper"), 422, "path.name")
    refused(api.post("/rulesets", json={**body_with(), "extra": 1}), 422)
    refused(post({**body_with(), "description": "d" * 2001}), 422, "body.description")
    lone = '{"name": "x", "description": "\\ud800", "rules": [{"id": "r", "text": "x"}]}'
    refused(api.post("/rulesets", content=lone, headers={"Content-Type": "application/json"}), 422)  # any field
    lone_rule = '{"name": "x", "rules": [{"id": "r", "text": "\\ud800"}]}'
    refused(api.post("/rulesets", content=lone_rule, headers={"Content-Type": "application/json"}), 422)
    lone_example = (
        '{"name": "x", "rules": [{"id": "r", "text": "x", "examples": [{"text": "\\ud800", "violates": true}]}]}'
    )
    refused(api.post("/rulesets", content=lone_example, headers={"Content-Type": "application/json"}), 422,
            "rules[0].examples[0].text")  # fmt: skip
    over_the_body_limit = {"name": unique(), "rules": [{"id": "r", "text": "x" * (s.max_body_bytes + 1)}]}
    refused(post(over_the_body_limit), 413, limit="max_body_bytes")

    # Lines are kept sorted and once; an example without lines shows none.
    created = post(body_with(examples=[{"text": "a\nb\nc", "violates": True, "lines": [3, 1, 3]}]))
    assert created.status_code == 201 and created.json()["rules"][0]["examples"][0]["lines"] == [1, 3]
    # Nothing of a refused request was stored.
    assert all(r["name"] != too_many_rules["name"] for r in api.get("/rulesets", params={"limit": 100}).json()["items"])


def test_missing_sets_versions_and_tests_are_404_naming_what_is_missing(tables_api: Any) -> None:
    api = tables_api
    _, auth = make_user(api)
    name = unique()
    create(api, name, auth)

    refused(api.get(f"/rulesets/{unique()}", headers=auth), 404, "name")
    refused(api.get(f"/rulesets/{name}/versions/2", headers=auth), 404, "version")
    refused(api.post(f"/rulesets/{name}/versions/7/test", headers=auth), 404, "version")
    refused(api.get(f"/rulesets/{name}/versions/1/test", headers=auth), 404, "test")
    refused(api.post(f"/rulesets/{unique()}/versions", json={"rules": RULES}, headers=auth), 404, "name")
    refused(api.get(f"/rulesets/{name}/versions/0", headers=auth), 422, "path.version")
    bare = unique()
    create(api, bare, auth, rules=[{"id": "polite", "text": "Be polite."}])
    refused(api.post(f"/rulesets/{bare}/versions/1/test", headers=auth), 422, "examples")  # nothing to judge


def test_a_retired_set_keeps_its_versions_readable_refuses_new_validations_and_a_push_reinstates_it(
    tables_api: Any,
) -> None:
    api = tables_api
    alice, auth = make_user(api)
    name = unique()
    create(api, name, auth)

    retired = api.delete(f"/rulesets/{name}", headers=auth)
    assert retired.status_code == 200 and retired.json()["retired_at"]
    assert api.delete(f"/rulesets/{name}", headers=auth).json()["retired_at"] == retired.json()["retired_at"]
    assert api.get(f"/rulesets/{name}/versions/1", headers=auth).status_code == 200
    refused(api.post(f"/rulesets/{name}/versions/1/test", headers=auth), 409, "name")
    refused(api.post("/rulesets", json={"name": name, "rules": RULES}, headers=auth), 409, "name")

    back = api.post(f"/rulesets/{name}/versions", json={"rules": RULES}, headers=auth)  # equal content: v1
    assert back.status_code == 200 and back.json()["version"] == 1
    assert api.get(f"/rulesets/{name}", headers=auth).json()["retired_at"] is None
    actions = [(e["action"], e["target"]) for e in api.get("/admin/audit", params={"limit": 100}).json()["items"]]
    assert ("ruleset.retire", f"{alice}/{name}") in actions and ("ruleset.reinstate", f"{alice}/{name}@1") in actions


def test_lists_page_through_own_sets_then_shared_ones(tables_api: Any) -> None:
    api = tables_api
    _, auth = make_user(api)
    own = sorted(unique("own") for _ in range(3))
    for name in own:
        create(api, name, auth)
    shared = unique("zz-shared")
    create(api, shared, shared=True)

    seen: list[tuple[bool, str]] = []
    cursor = None
    while True:
        page = api.get("/rulesets", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=auth).json()
        assert len(page["items"]) <= 2
        seen.extend((r["owner"] == "admin", r["name"]) for r in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [n for is_shared, n in seen if not is_shared] == own  # own first, by name
    assert (True, shared) in seen and seen.index((True, shared)) > seen.index((False, own[-1]))


# --- resolve, as a submission's `ruleset` uses it -------------------------------------------------------


@asynccontextmanager
async def store_of(settings: Settings) -> AsyncIterator[RulesetStore]:
    async with AsyncExitStack() as stack:
        clients = await open_clients(stack, settings.aws_region, settings.aws_endpoint_url)
        yield RulesetStore(clients, settings)


class NoAudit:
    async def audit(self, actor: str, action: str, target: str, old: Any, new: Any) -> None:
        raise AssertionError("resolve changes nothing")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def user(user_id: str) -> Principal:
    return Principal(user_id=user_id, role="user")


def test_resolve_finds_the_callers_set_then_a_shared_one_and_names_ruleset_when_it_cannot(
    tables_api: Any, tables_settings: Settings
) -> None:
    api = tables_api
    alice, alice_auth = make_user(api)
    bob, _ = make_user(api)
    name, shared = unique(), unique("shared")
    create(api, name, alice_auth)
    api.post(f"/rulesets/{name}/versions", json={"rules": RULES[:1]}, headers=alice_auth)
    create(api, shared, shared=True)

    secret, polite = Rule("no-secret", 'The file must not contain "secret".'), Rule("polite", "Be polite.")

    async def resolutions() -> None:
        async with store_of(tables_settings) as store:
            service = RulesetService(store, NoAudit(), tables_settings)

            async def refusal(principal: Principal, reference: str) -> AppError:
                with pytest.raises(AppError) as raised:
                    await service.resolve(principal, reference)
                return raised.value

            assert await service.resolve(user(alice), name) == RulesetVersion(alice, name, 2, (secret,))
            assert await service.resolve(user(alice), f"{name}@1") == RulesetVersion(alice, name, 1, (secret, polite))
            assert await service.resolve(user(bob), shared) == RulesetVersion("admin", shared, 1, (secret, polite))
            for principal, reference, kind in (
                (user(bob), name, NotFound),  # alice's set: not bob's to use
                (user(alice), f"{name}@3", NotFound),
                (user(alice), unique(), NotFound),
                (user(alice), f"{name}@0", Unprocessable),
                (user(alice), "Bad Name", Unprocessable),
            ):
                error = await refusal(principal, reference)
                assert isinstance(error, kind) and error.extra["field"] == "ruleset", (reference, error)
            api.delete(f"/rulesets/{name}", headers=alice_auth)
            error = await refusal(user(alice), f"{name}@1")
            assert isinstance(error, Conflict) and error.extra["field"] == "ruleset" and "retired" in error.detail

    run(resolutions())


@pytest.mark.parametrize(
    ("reference", "parsed"), [("a", ("a", None)), ("a-b_c@1", ("a-b_c", 1)), ("x@999999", ("x", 999_999))]
)
def test_a_reference_is_a_name_and_maybe_a_version(reference: str, parsed: tuple[str, int | None]) -> None:
    assert parse_reference(reference) == parsed
