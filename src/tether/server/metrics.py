"""Placeholder for the metrics routes; the spine area fills it in."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
