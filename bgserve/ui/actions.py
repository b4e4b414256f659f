"""The action forms of a deployment page, shown only to roles that may use them.

The forms carry no secret: the script posts them as JSON with the page's CSRF token in a
header, and the server checks role and token again on every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from bgserve.api.auth import Principal, Role
from bgserve.domain.release import Release
from bgserve.ui.html import e


def _release_options(releases: Sequence[Release]) -> str:
    return "".join(
        f"<option value='{r.id}'>#{r.id} {e(r.name)} (model v{r.model_version}, "
        f"prompt v{r.prompt_version})</option>"
        for r in sorted(releases, key=lambda r: -r.id)
    )


def _golden_default(green: Release | None) -> str:
    return "" if green is None else green.prompt_name


def _force(form: str) -> str:
    return (
        f"<label class='inline'><input type='checkbox' name='force' id='{form}-force'> "
        "force (skips a failed or missing gate; recorded)</label>"
    )


def actions_panel(
    name: str, principal: Principal, releases: Sequence[Release], green: Release | None
) -> str:
    """Stage, compare, promote (a step or the plan), revert: empty below the deployer role."""
    if principal.role < Role.DEPLOYER:
        return ""
    base = f"/ui/d/{quote(name)}"
    return (
        "<section class='actions' aria-labelledby='h-actions'><h2 id='h-actions'>Actions</h2>"
        f"<form data-action='{e(base)}/stage'><label for='stage-release'>Stage release</label>"
        f"<select id='stage-release' name='release_id' data-type='int'>"
        f"{_release_options(releases)}</select><button type='submit'>Stage green</button></form>"
        f"<form data-action='{e(base)}/compare'><label for='compare-set'>Golden set</label>"
        f"<input id='compare-set' name='golden_set' required value='{e(_golden_default(green))}'>"
        "<button type='submit'>Run comparison</button></form>"
        f"<form data-action='{e(base)}/promote'><label for='promote-weight'>Green weight</label>"
        "<input id='promote-weight' name='weight' type='number' min='0' max='100' required "
        f"data-type='int' inputmode='numeric'>{_force('step')}"
        "<button type='submit'>Promote one step</button></form>"
        f"<form data-action='{e(base)}/promote'>{_force('plan')}"
        "<button type='submit'>Run the plan</button></form>"
        f"<form data-action='{e(base)}/revert'><button type='submit' class='danger'>Revert"
        "</button></form></section>"
    )
