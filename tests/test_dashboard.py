"""The dashboard's routes through the real app: the redirect, the page, its fixed set of
files with their types and caching, 404 problems for any other name, and what ships.

What the page does in a browser is tests/test_browser.py's part.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import falcon.testing
import pytest

from api.http.static import ASSETS, DIRECTORY, PAGE
from api.node import Node
from tests.support import ROOT, settings_for

FILES = ROOT / "api" / "http" / DIRECTORY


@pytest.fixture
def node(sqlite_url: str) -> Iterator[Node]:
    node = Node(settings_for(sqlite_url)).start(bind=False)
    yield node
    node.stop()


@pytest.fixture
def client(node: Node) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(node.app)


def asset_urls(page: str) -> dict[str, str]:
    """name -> the URL the page loads it from"""
    return {m.group(1): m.group(0) for m in re.finditer(r"dashboard/([\w.]+)\?v=[0-9a-f]+", page)}


def test_the_root_redirects_to_the_dashboard(client: falcon.testing.TestClient) -> None:
    for method in ("GET", "HEAD"):
        result = client.simulate_request(method, "/")
        assert result.status_code == 302
        assert result.headers["location"] == "/dashboard"


def test_the_page_is_html_that_loads_every_asset_under_one_version(
    client: falcon.testing.TestClient,
) -> None:
    result = client.simulate_get("/dashboard")
    assert result.status_code == 200
    assert result.headers["content-type"] == "text/html; charset=utf-8"
    assert result.headers["cache-control"] == "no-cache"
    assert result.headers["x-content-type-options"] == "nosniff"
    policy = result.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "{{version}}" not in result.text
    urls = asset_urls(result.text)
    assert set(urls) == set(ASSETS)
    assert len({url.split("?v=")[1] for url in urls.values()}) == 1


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_each_asset_is_served_with_its_type_and_kept_for_good_under_its_version(
    client: falcon.testing.TestClient, name: str
) -> None:
    url = asset_urls(client.simulate_get("/dashboard").text)[name]
    path, _, query = url.partition("?")
    current = client.simulate_get(f"/{path}", query_string=query)
    assert current.status_code == 200
    assert current.headers["content-type"] == ASSETS[name]
    assert current.headers["x-content-type-options"] == "nosniff"
    assert current.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert current.content == (FILES / name).read_bytes()
    # Without the version, or with an old one, the browser must ask again before use.
    for other in ("", "v=0123456789ab"):
        again = client.simulate_get(f"/{path}", query_string=other)
        assert again.status_code == 200
        assert again.headers["cache-control"] == "no-cache"
        assert again.headers["etag"] == current.headers["etag"]


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/dashboard.js"])
def test_a_matching_etag_answers_304_without_a_body(
    client: falcon.testing.TestClient, path: str
) -> None:
    first = client.simulate_get(path)
    etag = first.headers["etag"]
    again = client.simulate_get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    changed = client.simulate_get(path, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and changed.content == first.content


def test_head_answers_the_headers_of_get(client: falcon.testing.TestClient) -> None:
    for path in ("/dashboard", "/dashboard/uplot.min.css"):
        got, head = client.simulate_get(path), client.simulate_head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["etag"] == got.headers["etag"]


@pytest.mark.parametrize(
    "name",
    [
        "index.html",  # the page lives at /dashboard only
        "uplot.LICENSE",  # shipped beside uPlot, not served
        "static.py",
        "DASHBOARD.JS",
        "..",
        "..%2Fapp.py",
        "%2e%2e%2fstatic.py",
        "..%2F..%2Fsetup.cfg",
        "dashboard.js%00.png",
        "dashboard.js%2F",
    ],
)
def test_any_other_name_is_a_404_problem(client: falcon.testing.TestClient, name: str) -> None:
    result = client.simulate_get(f"/dashboard/{name}")
    assert result.status_code == 404
    assert result.headers["content-type"] == "application/problem+json"
    assert result.json["status"] == 404


def test_paths_past_the_directory_are_not_routed(client: falcon.testing.TestClient) -> None:
    for path in ("/dashboard/../api/static.py", "/dashboard/x/dashboard.js", "/dashboard/"):
        result = client.simulate_get(path)
        assert result.status_code == 404, path
        assert result.headers["content-type"] == "application/problem+json"


def test_the_dashboard_is_open_with_auth_on(client: falcon.testing.TestClient, node: Node) -> None:
    node.tokens.create("someone", ["admin"])
    assert client.simulate_get("/metrics").status_code == 401
    assert client.simulate_get("/").status_code == 302
    assert client.simulate_get("/dashboard").status_code == 200
    for name in ASSETS:
        assert client.simulate_get(f"/dashboard/{name}").status_code == 200


def test_the_wheel_ships_every_dashboard_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from setuptools.config.setupcfg import read_configuration

    monkeypatch.chdir(ROOT)
    patterns = read_configuration(ROOT / "setup.cfg")["options"]["package_data"]["api.http"]
    shipped = {
        path.name
        for path in FILES.iterdir()
        if any(fnmatch(f"{DIRECTORY}/{path.name}", pattern) for pattern in patterns)
    }
    assert shipped == {path.name for path in FILES.iterdir()}
    assert shipped >= {PAGE, *ASSETS, "uplot.LICENSE"}


def test_uplot_is_vendored_at_its_pinned_version_with_its_licence() -> None:
    pinned = "uPlot 1.6.32, vendored unchanged below this comment from the npm package uplot@1.6.32"
    for name in ("uplot.min.js", "uplot.min.css"):
        assert (FILES / name).read_text().startswith(f"/* {pinned}\n"), name
    assert "(v1.6.32)" in (FILES / "uplot.min.js").read_text()[:400]
    licence = (FILES / "uplot.LICENSE").read_text()
    assert licence.startswith("The MIT License") and "Leon Sorokin" in licence


def test_the_page_puts_server_values_in_as_text_only() -> None:
    for name in ("dashboard.js", "charts.js"):
        script = (FILES / name).read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)
    assert Path(FILES / "index.html").read_text().count("{{version}}") == len(ASSETS)
