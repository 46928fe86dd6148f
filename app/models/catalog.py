"""The admin's list of models (core/models.py) as the API reads and writes it.

SSM holds it: `<prefix>/models` (JSON, the source of truth, like `<prefix>/prices`), with the
default model's targets in the deployment-wide `<prefix>/target-tpm` and `<prefix>/target-rpm`.
Read with one GetParameters and kept per process for CONFIG_CACHE_SECONDS, never per request.
The Lambdas never read it here: `PATCH /admin/models` has the reconciler copy it onto the
governor's mirror (lambdas/common/live_config.py).

`ModelCatalog` is also the validations' port: `resolve(name)` is the entry a submission asks
for (None: the default), or 422 naming `model`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from botocore.exceptions import ClientError

from app.aws.clients import AWSClients
from app.errors import Unprocessable, UpstreamError
from app.settings import Settings
from core.models import Catalog, ModelEntry, ModelListError, UnknownModel, check

PARAMETER = "models"
TARGETS = ("target-tpm", "target-rpm")  # the default model's targets
_cache: dict[str, tuple[float, Catalog]] = {}  # the models parameter's name → (read at, list)


class ModelCatalog:
    def __init__(self, clients: AWSClients, settings: Settings) -> None:
        self._ssm = clients.ssm
        self._prefix = settings.ssm_prefix
        self._name = f"{settings.ssm_prefix}/{PARAMETER}"
        self._configured = settings.openai_model
        self._cache_seconds = settings.config_cache_seconds

    async def catalog(self, *, fresh: bool = False) -> Catalog:
        """The list in effect (cached CONFIG_CACHE_SECONDS unless `fresh`)."""
        held = _cache.get(self._name)
        if held is not None and not fresh and time.monotonic() - held[0] < self._cache_seconds:
            return held[1]
        catalog = self._parse(*await self._read())
        _cache[self._name] = (time.monotonic(), catalog)
        return catalog

    async def entries(self) -> tuple[ModelEntry, ...]:
        return (await self.catalog()).entries

    async def default(self) -> ModelEntry:
        return (await self.catalog()).default

    async def resolve(self, name: str | None) -> ModelEntry:
        """The entry of the model `name` (None: the default); 422 naming `model` when it is not listed."""
        catalog = await self.catalog()
        try:
            return catalog.resolve(name)
        except UnknownModel:
            raise Unprocessable(
                f"The model {name!r} is not offered here; the models offered are {', '.join(catalog.names)} "
                f"(default {catalog.default.name}).",
                field="model",
            ) from None

    async def replace(self, entries: Sequence[ModelEntry]) -> tuple[Catalog | None, Catalog]:
        """Store a new list (422 naming the field at fault: `models[2].name`); (before, after),
        before None when the stored list was unusable (an edit made straight in SSM: this fixes it).
        The default's targets go to `target-tpm` and `target-rpm`, the rest to `<prefix>/models`."""
        try:
            check(entries)
        except ModelListError as exc:
            raise Unprocessable(f"{exc.field}: {exc}", field=exc.field) from None
        text, targets = await self._read()
        try:
            before: Catalog | None = self._parse(text, targets)
        except UpstreamError:
            before = None
        after = Catalog(tuple(entries))
        default = after.default
        wanted = {"target-tpm": default.target_tpm, "target-rpm": default.target_rpm}
        for name, value in wanted.items():  # the targets first: the list never names a default without them
            if value is not None and targets.get(name) != value:
                await self._put(name, str(value))
        if after.stored() != text:
            await self._put(PARAMETER, after.stored())
        _cache.pop(self._name, None)
        return before, after

    async def _read(self) -> tuple[str | None, dict[str, int | None]]:
        """(the stored JSON, the deployment-wide targets) with one GetParameters."""
        names = [self._name, *(f"{self._prefix}/{t}" for t in TARGETS)]
        try:
            answer = await self._ssm.get_parameters(Names=names)
        except ClientError as exc:
            raise UpstreamError(f"SSM GetParameters failed: {exc.response['Error']['Code']}") from exc
        values = {p["Name"].rsplit("/", 1)[-1]: p["Value"] for p in answer["Parameters"]}
        try:
            targets = {t: int(values[t]) if values.get(t, "").strip() else None for t in TARGETS}
        except ValueError as exc:
            raise UpstreamError(f"SSM parameters {', '.join(TARGETS)} under {self._prefix}: {exc}") from exc
        return values.get(PARAMETER), targets

    def _parse(self, text: str | None, targets: dict[str, int | None]) -> Catalog:
        tpm = targets["target-tpm"]
        if tpm is None:
            raise UpstreamError(f"SSM parameters missing: {self._prefix}/target-tpm")
        try:
            return Catalog.parse(text, self._configured, tpm, targets["target-rpm"])
        except ValueError as exc:  # edited straight in SSM into something unusable
            raise UpstreamError(f"The SSM parameter {self._name} is not a list of models: {exc}") from exc

    async def _put(self, name: str, value: str) -> None:
        try:
            await self._ssm.put_parameter(Name=f"{self._prefix}/{name}", Value=value, Type="String", Overwrite=True)
        except ClientError as exc:
            raise UpstreamError(f"SSM PutParameter failed: {exc.response['Error']['Code']}") from exc
