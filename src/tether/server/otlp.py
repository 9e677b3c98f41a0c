"""Placeholder for the otlp routes; the spine area fills it in."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
