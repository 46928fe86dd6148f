"""What the rule set endpoints (and the validations service, to resolve a submission's `ruleset`) ask for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from app.deps import ClientsDep, SettingsDep
from app.rulesets.schemas import NAME_PATTERN
from app.rulesets.service import RulesetService
from app.rulesets.store import RulesetStore
from app.users.dependencies import Users


def get_ruleset_service(settings: SettingsDep, clients: ClientsDep, users: Users) -> RulesetService:
    return RulesetService(RulesetStore(clients, settings), users, settings)


Rulesets = Annotated[RulesetService, Depends(get_ruleset_service)]
RulesetName = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME_PATTERN)]
VersionNumber = Annotated[int, Path(ge=1, le=999_999)]
Owner = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.@-]+$",
        description="Admins: the user whose rule set this is (default: your own, then a shared one)",
    ),
]
