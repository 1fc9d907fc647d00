"""``X-Api-Key`` on every ``/v1/sandbox/*`` route: exact match or HTTP 401 with an empty body."""

from __future__ import annotations

import pytest

from .conftest import KEY, Api, MakeApi

pytestmark = [pytest.mark.api, pytest.mark.anyio]

AUTHED_ROUTES = [
    pytest.param("POST", "/v1/sandbox/run", {"language": "python3", "code": "print(1)"}, id="run"),
    pytest.param("GET", "/v1/sandbox/dependencies?language=python3", None, id="dependencies"),
    pytest.param("POST", "/v1/sandbox/dependencies/update", {"language": "python3"}, id="dependencies-update"),
    pytest.param("GET", "/v1/sandbox/dependencies/refresh?language=python3", None, id="dependencies-refresh"),
]
WRONG_KEYS = [None, "", "wrong-key", "Dify-Sandbox", "dify-sandbox2", " dify-sandbox", "dify-sandbo"]


def _headers(key: str | None) -> dict[str, str]:
    return {"X-Api-Key": key} if key is not None else {}


@pytest.mark.parametrize(("method", "path", "body"), AUTHED_ROUTES)
@pytest.mark.parametrize("key", WRONG_KEYS, ids=repr)
async def test_missing_or_wrong_key_is_401_with_empty_body(
    run_api: Api, method: str, path: str, body: object, key: str | None
) -> None:
    """Any key but the configured one, or none, gives HTTP 401 with no body at all, and nothing runs."""
    run_api.client.headers.pop("X-Api-Key")
    resp = await run_api.client.request(method, path, json=body, headers=_headers(key))
    assert resp.status_code == 401
    assert resp.content == b""
    assert resp.headers["content-length"] == "0"
    assert run_api.python.requests == []
    assert run_api.python.rewarms == 0


@pytest.mark.parametrize(("method", "path", "body"), AUTHED_ROUTES)
async def test_right_key_is_served(run_api: Api, method: str, path: str, body: object) -> None:
    """The exact configured key is served on every route."""
    resp = await run_api.client.request(method, path, json=body, headers={"X-Api-Key": KEY})
    assert resp.status_code == 200
    assert resp.json()["code"] == 0


async def test_key_is_checked_before_the_body(run_api: Api) -> None:
    """A bad body with a wrong key is a 401, not a validation error."""
    resp = await run_api.post(b"{not json", **{"X-Api-Key": "wrong"})
    assert (resp.status_code, resp.content) == (401, b"")


async def test_configured_key_other_than_the_default(make_api: MakeApi, run_path: str) -> None:
    """With API_KEY set, that key is served and the default one is refused."""
    api = await make_api(run_path, api_key="secret-xyz")
    assert (await api.run()).status_code == 401
    api.client.headers["X-Api-Key"] = "secret-xyz"
    assert (await api.run()).json()["code"] == 0


async def test_empty_configured_key_matches_a_missing_header(make_api: MakeApi, run_path: str) -> None:
    """Authentication off on purpose: an empty API_KEY matches a missing header (official), not a non-empty key."""
    api = await make_api(run_path, api_key="", allow_no_key=True)  # the operator opted out of a key
    api.client.headers.pop("X-Api-Key")
    assert (await api.run()).json()["code"] == 0
    assert (
        await api.client.post("/v1/sandbox/run", json={"language": "python3", "code": "1"}, headers={"X-Api-Key": "x"})
    ).status_code == 401


async def test_non_ascii_key_is_compared_as_sent(make_api: MakeApi, run_path: str) -> None:
    """A key outside ASCII is matched on its UTF-8 bytes as sent, not refused or mangled."""
    api = await make_api(run_path, api_key="clé")
    api.client.headers.pop("X-Api-Key")
    resp = await api.client.post(
        "/v1/sandbox/run", json={"language": "python3", "code": "1"}, headers=[(b"X-Api-Key", "clé".encode())]
    )
    assert resp.json()["code"] == 0


async def test_health_needs_no_key(api: Api) -> None:
    """/health is public."""
    api.client.headers.pop("X-Api-Key")
    resp = await api.client.get("/health")
    assert (resp.status_code, resp.content) == (200, b'"ok"')


async def test_metrics_are_open_by_default_and_keyed_on_request(make_api: MakeApi) -> None:
    """/metrics needs no key unless SANDBOX_METRICS_REQUIRE_KEY is on; then a wrong key is a bare 401."""
    open_api = await make_api()
    open_api.client.headers.pop("X-Api-Key")
    assert (await open_api.client.get("/metrics")).status_code == 200
    keyed = await make_api(metrics_require_key=True)
    assert (await keyed.client.get("/metrics")).status_code == 200
    keyed.client.headers.pop("X-Api-Key")
    resp = await keyed.client.get("/metrics")
    assert (resp.status_code, resp.content) == (401, b"")
