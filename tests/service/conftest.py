"""Fixtures: the app, and a synchronous httpx client that drives it through ASGITransport."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from service.app import create_app
from service.estimates.schemas import LLAMA3_70B_EXAMPLE
from service.settings import Settings
from tests.service.support import Api


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def api(app: FastAPI) -> Iterator[Api]:
    client = Api(app)
    yield client
    client.close()


@pytest.fixture
def example() -> dict[str, Any]:
    """A fresh copy of the documented Llama-3-70B request."""
    return copy.deepcopy(LLAMA3_70B_EXAMPLE)
