"""API keys (``MESHPLAN_AUTH=1``): stored hashed; every ``/v1`` endpoint needs one, the
operational ones and the docs do not; a key sees only its own searches and plans (404 for the
others'). Both databases."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from service.app import create_app
from service.auth import service as keys
from service.db.engine import Database
from service.db.models import ApiKey
from service.jobs.worker import Worker
from service.settings import Settings
from tests.service.support import SMALL_SEARCH, Api, assert_problem


@pytest.fixture
def secured(db: Database, db_settings: Settings) -> Iterator[Api]:
    api = Api(create_app(db_settings.model_copy(update={"auth": True}), db=db))
    yield api
    api.close()


def new_key(db: Database, name: str) -> str:
    with db.session() as s:
        return keys.create_key(s, name).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


V1 = [("GET", "/v1/gpus"), ("GET", "/v1/models/llama3-8b"), ("POST", "/v1/estimates"),
      ("POST", "/v1/searches"), ("GET", "/v1/searches"),
      ("GET", "/v1/searches/00000000-0000-0000-0000-000000000000"),
      ("DELETE", "/v1/searches/00000000-0000-0000-0000-000000000000"),
      ("GET", "/v1/plans/00000000-0000-0000-0000-000000000000"),
      ("POST", "/v1/plans/00000000-0000-0000-0000-000000000000/runs"),
      ("GET", "/v1/calibrations"), ("POST", "/v1/calibrations")]


@pytest.mark.parametrize(("method", "path"), V1)
def test_every_v1_endpoint_needs_a_key(secured: Api, db: Database, method: str,
                                       path: str) -> None:
    body = assert_problem(secured.request(method, path, json={}), 401)
    assert "requires an API key" in body["detail"]
    assert secured.request(method, path, json={}).headers["www-authenticate"].startswith(
        "Bearer")
    assert_problem(secured.request(method, path, json={}, headers=bearer("mpk_wrong")), 401)
    token = new_key(db, "ci")
    resp = secured.request(method, path, json={}, headers=bearer(token))
    assert resp.status_code != 401, resp.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/redoc",
                                  "/openapi.json"])
def test_operations_and_docs_need_no_key(secured: Api, path: str) -> None:
    assert secured.get(path).status_code == 200


def test_openapi_declares_both_ways_to_send_a_key(secured: Api) -> None:
    schemes = secured.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                       "description": schemes["APIKeyHeader"]["description"]}


def test_keys_are_stored_hashed(db: Database) -> None:
    with db.session() as s:
        created = keys.create_key(s, "runtime")
    token = created.token
    assert token.startswith("mpk_") and len(token) > 40
    with db.session() as s:
        row = s.scalars(select(ApiKey)).one()
        assert row.key_hash == hashlib.sha256(token.encode()).hexdigest()
        assert row.prefix == token[:12] and token[12:] not in (row.name, row.prefix)
    with pytest.raises(ValueError), db.session() as s:
        keys.create_key(s, "  ")


def test_a_key_sees_only_its_own(secured: Api, db: Database, db_settings: Settings) -> None:
    alice, bob = new_key(db, "alice"), new_key(db, "bob")
    a = secured.post("/v1/searches", json=SMALL_SEARCH, headers=bearer(alice)).json()
    # the same request from another key is another search (owner scope of the hash)
    b = secured.post("/v1/searches", json=SMALL_SEARCH, headers={"X-API-Key": bob}).json()
    assert a["id"] != b["id"] and a["request_hash"] == b["request_hash"]
    Worker(db, db_settings).run_until_idle()

    assert secured.get(f"/v1/searches/{a['id']}", headers=bearer(alice)).status_code == 200
    assert_problem(secured.get(f"/v1/searches/{a['id']}", headers=bearer(bob)), 404)
    assert_problem(secured.request("DELETE", f"/v1/searches/{a['id']}",
                                   headers=bearer(bob)), 404)
    assert [s["id"] for s in secured.get("/v1/searches", headers=bearer(bob)).json()] == [
        b["id"]]

    plan = secured.get(f"/v1/searches/{a['id']}", headers=bearer(alice)
                       ).json()["result"]["plans"][0]["id"]
    assert secured.get(f"/v1/plans/{plan}", headers=bearer(alice)).status_code == 200
    assert_problem(secured.get(f"/v1/plans/{plan}", headers=bearer(bob)), 404)
    run: dict[str, Any] = {"measured": {"step_time_s": 1.0, "step_times_s": [1.0],
                                        "tokens_per_s": 1.0},
                           "environment": {"device": "cpu", "backend": "gloo",
                                           "world_size": 1, "torch": "2"}, "steps": 1}
    assert_problem(secured.post(f"/v1/plans/{plan}/runs", json=run, headers=bearer(bob)), 404)
    assert secured.post(f"/v1/plans/{plan}/runs", json=run,
                        headers=bearer(alice)).status_code == 201

    # calibrations describe hardware: shared by every key
    from service.calibrations.schemas import H100_PROFILE_EXAMPLE

    cal = secured.post("/v1/calibrations", json=H100_PROFILE_EXAMPLE,
                       headers=bearer(bob)).json()["id"]
    assert secured.get(f"/v1/calibrations/{cal}", headers=bearer(alice)).status_code == 200


def test_revoked_key_is_refused(secured: Api, db: Database) -> None:
    with db.session() as s:
        created = keys.create_key(s, "old")
    assert secured.get("/v1/gpus", headers=bearer(created.token)).status_code == 200
    with db.session() as s:
        keys.revoke_key(s, str(created.key.id))
    body = assert_problem(secured.get("/v1/gpus", headers=bearer(created.token)), 401)
    assert "not valid" in body["detail"]


def test_auth_off_needs_no_key(client: Api) -> None:
    assert client.get("/v1/gpus").status_code == 200
    assert client.get("/v1/searches", headers=bearer("anything")).status_code == 200


def test_apikey_commands(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    monkeypatch.setenv("MESHPLAN_DATABASE_URL", db_url)
    assert main(["apikey", "create", "ci pipeline"]) == 0
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert token.startswith("mpk_") and "shown only now" in captured.err
    with db.session() as s:
        principal = keys.authenticate(s, token)
        key_id = str(principal.key_id)
    assert main(["apikey", "list"]) == 0
    listing = capsys.readouterr().out
    assert "ci pipeline" in listing and key_id in listing and token not in listing
    assert main(["apikey", "revoke", key_id]) == 0
    assert main(["apikey", "revoke", "nope"]) == 2
    assert main(["apikey", "create", " "]) == 2
