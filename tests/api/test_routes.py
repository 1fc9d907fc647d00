"""The routes besides the run itself: /health (and during drain), the dependencies endpoints, unknown routes."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from .conftest import Api, MakeApi

pytestmark = [pytest.mark.api, pytest.mark.anyio]

UNSUPPORTED_LANGUAGE = b'{"code":-400,"message":"unsupported language","data":null}'
NOT_FOUND = b"404 page not found"
LISTS = ["/v1/sandbox/dependencies", "/v1/sandbox/dependencies/refresh"]


async def test_health_answers_the_json_string_ok(api: Api) -> None:
    """GET /health: HTTP 200 and exactly "ok" with its quotes, no envelope."""
    resp = await api.client.get("/health")
    assert resp.status_code == 200
    assert resp.content == b'"ok"'
    assert resp.headers["content-type"] == "application/json"


async def test_health_is_503_while_draining(api: Api) -> None:
    """Once shutdown begins, /health answers 503 "shutting down" so load balancers stop sending."""
    api.service.admission.draining = True
    resp = await api.client.get("/health")
    assert (resp.status_code, resp.content) == (503, b'"shutting down"')


@pytest.mark.parametrize("path", ["/nope", "/v1/sandbox/nope", "/v1/sandbox", "/health/x"])
@pytest.mark.parametrize("key", ["dify-sandbox", None], ids=["key", "no-key"])
async def test_unknown_route_is_gins_plain_404(api: Api, path: str, key: str | None) -> None:
    """A route that does not exist is gin's plain-text 404, with or without a key."""
    if key is None:
        api.client.headers.pop("X-Api-Key")
    resp = await api.client.get(path)
    assert resp.status_code == 404
    assert resp.content == NOT_FOUND
    assert resp.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/sandbox/run"), ("PUT", "/v1/sandbox/run"), ("POST", "/health")]
)
async def test_wrong_method_is_the_same_404(api: Api, method: str, path: str) -> None:
    """A known path with another method is the same 404 as gin gives (not 405)."""
    resp = await api.client.request(method, path)
    assert (resp.status_code, resp.content) == (404, NOT_FOUND)


@pytest.mark.parametrize("path", LISTS)
async def test_dependencies_list_the_builtins_with_installed_versions(api: Api, path: str) -> None:
    """Without a requirements file, the list is jinja2, httpx and requests with their installed versions."""
    resp = await api.client.get(path, params={"language": "python3"})
    assert resp.status_code == 200
    assert resp.json() == {
        "code": 0,
        "message": "success",
        "data": {
            "dependencies": [
                {"name": name, "version": importlib.metadata.version(name)} for name in ("jinja2", "httpx", "requests")
            ]
        },
    }


async def test_dependencies_add_the_requirements_files(make_api: MakeApi, tmp_path: Path) -> None:
    """Packages named in the requirements files follow, once each; one not installed has version ""."""
    requirements = tmp_path / "python-requirements.txt"
    requirements.write_text("# comment\npytest==9.2.0\nJinja2>=3\nnot-installed-package~=1.0\n-r other.txt\n\n")
    api = await make_api(requirements_files=[str(requirements), str(tmp_path / "missing.txt")])
    deps = (await api.client.get(LISTS[0], params={"language": "python3"})).json()["data"]["dependencies"]
    assert [dep["name"] for dep in deps] == ["jinja2", "httpx", "requests", "pytest", "not-installed-package"]
    assert deps[3]["version"] == importlib.metadata.version("pytest")
    assert deps[4]["version"] == ""


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("query", [{"language": "nodejs"}, {"language": "ruby"}, {}], ids=["nodejs", "ruby", "none"])
async def test_dependencies_of_other_languages_are_http_400(api: Api, path: str, query: dict[str, str]) -> None:
    """Only python3 has dependencies: anything else, or no language, is the exact unsupported-language 400."""
    resp = await api.client.get(path, params=query)
    assert (resp.status_code, resp.content) == (400, UNSUPPORTED_LANGUAGE)


async def test_dependencies_update_rewarms_the_python_executor(api: Api) -> None:
    """POST dependencies/update answers data {} once the python executor has re-warmed (node is left alone)."""
    resp = await api.client.post("/v1/sandbox/dependencies/update", json={"language": "python3"})
    assert resp.content == b'{"code":0,"message":"success","data":{}}'
    assert (api.python.rewarms, api.nodejs.rewarms) == (1, 0)


async def test_dependencies_update_takes_a_form_body(api: Api) -> None:
    """The official client may send language=python3 as a form field."""
    resp = await api.client.post("/v1/sandbox/dependencies/update", data={"language": "python3"})
    assert resp.json()["code"] == 0
    assert api.python.rewarms == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param({"language": "nodejs"}, 400, -400, id="nodejs"),
        pytest.param({}, 400, -400, id="no-language"),
        pytest.param({"language": 3}, 400, -400, id="language-int"),
    ],
)
async def test_dependencies_update_refuses_other_bodies(
    api: Api, body: dict[str, object], status: int, code: int
) -> None:
    """A body without language python3 is an enveloped 400 and re-warms nothing."""
    resp = await api.client.post("/v1/sandbox/dependencies/update", json=body)
    assert resp.status_code == status
    assert (resp.json()["code"], resp.json()["data"]) == (code, None)
    assert api.python.rewarms == 0


async def test_dependencies_update_over_the_body_limit_is_413(make_api: MakeApi) -> None:
    """The body limit covers the update route too."""
    api = await make_api(max_body_bytes=1024)
    resp = await api.client.post("/v1/sandbox/dependencies/update", json={"language": "python3", "pad": "x" * 1024})
    assert resp.status_code == 413
    assert resp.json()["code"] == -413
    assert api.python.rewarms == 0


async def test_metrics_count_requests_by_route_and_status(api: Api) -> None:
    """Requests are counted under their route template, unknown ones as "unmatched"."""
    await api.run()
    await api.client.get("/nope")
    text = (await api.client.get("/metrics")).text
    assert 'dify_sandbox_http_requests_total{route="/v1/sandbox/run",status="200"} 1.0' in text
    assert 'dify_sandbox_http_requests_total{route="unmatched",status="404"} 1.0' in text
    assert 'dify_sandbox_runs_total{language="python3",outcome="ok"} 1.0' in text
