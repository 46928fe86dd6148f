"""The reconciler's Lambda (lambdas/reconcile/reconciler.py): invoked by EventBridge
Scheduler on AWS, by a timer of the embedded runtime locally, and by `POST /admin/reconcile`
(which answers what this returns). `PATCH /admin/parallelism` and `PATCH /admin/models` invoke
it with `{"source": "parameters"}`: then it only copies the live parameters (the list of models
included) from SSM to the governor's mirror, where the validators read them
(lambdas/common/live_config.py). Its sweep reclaims dead leases of every model's budget."""

import logging
import time
from typing import Any

from lambdas.common import live_config
from lambdas.common.config import load_config
from lambdas.common.governor import governor_for
from lambdas.common.observability import count, observed
from lambdas.common.stores import client_for, store_for
from lambdas.common.webhooks import announce_end
from lambdas.reconcile.reconciler import reconcile

log = logging.getLogger(__name__)


@observed
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = load_config()
    store = store_for(config)

    def sync_parameters() -> list[str]:
        ssm = live_config.ssm_for(config)
        return live_config.sync(store.client, config.governor_table, ssm, config.ssm_prefix)

    if event.get("source") == "parameters":
        return {"parameters": sync_parameters() if config.governor_table else []}
    governor = governor_for(config, store.client) if config.governor_table else None
    report = reconcile(
        store,
        client_for(config, "stepfunctions"),
        time.time(),
        config.reconcile_grace_seconds,
        (lambda: governor.sweep(force=True)) if governor is not None else None,
        lambda validation_id, run, wrote: announce_end(config, store, validation_id, run, wrote_status=wrote),
        sync_parameters if config.governor_table else None,
    )
    if report.parameters:  # an edit made straight in SSM, now followed by the validators
        log.info("reconciler: live parameters copied from SSM: %s", ", ".join(report.parameters))
    fixes = len(report.ended) + len(report.stopped)
    if fixes:
        count("ReconcilerFixes", fixes)  # the <prefix>-reconciler-fixes alarm: something crashed or was lost
    return report.as_dict()
