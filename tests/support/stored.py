"""A state database holding one stored deployment, for commands that read it directly."""

from __future__ import annotations

from pathlib import Path

from bgserve.settings import Settings


def stored_deployment(tmp_path: Path, model: tuple[str, int]) -> str:
    """A state database holding deployment ``chat`` on one release of ``model``; its URL."""
    from datetime import UTC, datetime

    from bgserve.compose import build_store
    from bgserve.domain import rollout
    from bgserve.domain.release import ResolvedRelease

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = build_store(Settings(home=tmp_path, state_url=url))
    now = datetime.now(UTC)
    name, version = model
    resolved = ResolvedRelease(name, version, "greeting", 1, "bgserve.chat", 1)
    release = store.add_release(
        "chat-v1", resolved, f"models:/{name}/{version}", "prompts:/greeting/1", now
    )
    store.create_deployment(rollout.create("chat", release.id).state, now, "test", "test")
    store.close()
    return url
