"""The console's shell and assets (serve/console.py) through FastAPI's test client: served without a key, the chart
library from the installed plotly package, nothing else from the asset route. The page itself runs in Chromium in
tests/service/test_console.py."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve.console import plotly_js, router


def _client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def test_the_shell_and_its_assets_need_no_key_and_come_from_the_package():
    web = _client()
    shell = web.get("/console")
    assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
    for asset in ("console/static/console.js", "console/static/console.css", "console/static/plotly.min.js"):
        assert asset in shell.text
    assert "http://" not in shell.text and "https://" not in shell.text  # no CDN: every asset is served here
    js = web.get("/console/static/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "sessionStorage" in js.text and "localStorage" not in js.text
    plotly = web.get("/console/static/plotly.min.js")
    assert plotly.status_code == 200 and plotly.content == plotly_js().read_bytes() and len(plotly.content) > 1_000_000
    assert plotly_js().parent.parent.name == "plotly"  # the installed package's own copy


def test_the_asset_route_serves_only_the_console_files():
    web = _client()
    for name in ("index.html", "..%2Fconsole.py", "secrets.json"):
        found = web.get(f"/console/static/{name}")
        assert found.status_code == 404, name
