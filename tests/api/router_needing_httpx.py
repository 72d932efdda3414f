"""A router module that needs a third-party package (test_api_routers)."""

import httpx  # noqa: F401
from fastapi import APIRouter

router = APIRouter()
