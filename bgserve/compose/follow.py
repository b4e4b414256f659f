"""Follow rules' parts, from settings: the rule store on the state database, the MLflow
side, the handler, the leader's engine and the webhook verifier."""

from __future__ import annotations

from bgserve.app.comparer import Comparer
from bgserve.app.follow import FollowHandler
from bgserve.app.follow_engine import FollowEngine
from bgserve.app.follow_rules import Following, load_rule
from bgserve.app.follow_verdict import ReportLinks
from bgserve.app.follow_webhook import WebhookVerifier
from bgserve.app.golden_sets import load_golden_set
from bgserve.app.service import Service
from bgserve.app.shadow import ShadowCollector
from bgserve.evaluation.golden import GoldenCase
from bgserve.registry.follow_registry import FollowRegistry
from bgserve.registry.mlflow_registry import MlflowRegistry
from bgserve.settings import Settings
from bgserve.store import Store
from bgserve.store.follow_store import FollowStore


def build_following(
    settings: Settings,
    store: Store,
    registry: MlflowRegistry,
    service: Service,
    comparer: Comparer,
    shadow: ShadowCollector,
) -> Following:
    """Follow rules on ``store``'s database and ``registry``; the engine is started with
    the lead (:meth:`bgserve.compose.Components.lead`)."""
    follow = settings.follow
    rules = FollowStore(store.engine)
    aliases = FollowRegistry(registry)

    def golden(name: str) -> list[GoldenCase]:
        return load_golden_set(name, settings.prompts_dir)

    handler = FollowHandler(
        service,
        comparer,
        aliases,
        golden=golden,
        shadow=shadow,
        links=ReportLinks(follow.public_url),
        retry_s=follow.retry_seconds,
    )
    engine = FollowEngine(
        rules,
        store,
        handler,
        load_rule,
        interval=settings.engine_interval_seconds,
        poll_seconds=follow.poll_seconds,
    )
    verifier = WebhookVerifier(follow.webhook_secret, follow.webhook_max_age_seconds)
    return Following(rules, service, aliases, verifier, engine, golden=golden)
