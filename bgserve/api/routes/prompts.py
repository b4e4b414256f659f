"""POST /prompts/validate and the comparison route."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["prompts"])
