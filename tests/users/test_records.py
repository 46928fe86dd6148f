"""The user record: stored shape in and out, and what may be shown."""

from __future__ import annotations

from app.users.records import User
from core.quota import Quota

STORED = {
    "user_id": "carol",
    "role": "admin",
    "quota": {"capacity_tokens": 50_000, "refill_tokens_per_minute": 10_000, "max_running": 2},
    "on_limit": "reject",
    "disabled": False,
    "key_hash": "ab" * 32,
    "created_at": "2026-01-01T00:00:00Z",
}


def test_a_stored_user_reads_back_as_it_was_written() -> None:
    user = User.of(STORED)

    assert user.quota == Quota(50_000, 10_000, 2)
    assert user.updated_at is None
    assert User.of(user.item()) == user


def test_the_shown_user_has_no_key_hash_and_no_unset_update_time() -> None:
    shown = User.of(STORED).public()

    assert "key_hash" not in shown
    assert "updated_at" not in shown
    assert User.of({**STORED, "updated_at": "2026-01-02T00:00:00Z"}).public()["updated_at"] == "2026-01-02T00:00:00Z"


def test_the_principal_carries_role_quota_and_policy() -> None:
    principal = User.of(STORED).principal()

    assert (principal.user_id, principal.is_admin, principal.quota, principal.on_limit) == (
        "carol",
        True,
        Quota(50_000, 10_000, 2),
        "reject",
    )


def test_a_quota_stored_before_max_queued_gets_the_configured_default() -> None:
    """Users stored before `max_queued` existed: the deployment's DEFAULT_MAX_QUEUED, not a constant."""
    assert User.of(STORED, default_max_queued=7).quota.max_queued == 7
    own = {
        **STORED,
        "quota": {"capacity_tokens": 50_000, "refill_tokens_per_minute": 10_000, "max_running": 2, "max_queued": 3},
    }
    assert User.of(own, default_max_queued=7).quota.max_queued == 3
