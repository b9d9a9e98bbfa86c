"""The console: one page at `/console` on the app's FastAPI ingress, a client of the app's own API and nothing else.

The page and its assets need no key (they hold no data); every data call the page makes goes to the `/v1` routes
with the `Authorization: Bearer` key the user typed, which the page keeps in sessionStorage. The chart library is
the `plotly.min.js` that the installed `plotly` package ships, so the page works offline (docs/console.md).
"""

# No `from __future__ import annotations`: FastAPI must see real classes in the route signatures.
from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from serve.openai_protocol import error_body

router = APIRouter()
ASSETS = Path(__file__).resolve().parent / "console_assets"
OWN = {"console.js": "text/javascript", "console.css": "text/css"}
NO_STORE = {"Cache-Control": "no-store"}  # the shell and its module change with the app; a browser keeps no stale copy


def plotly_js() -> Path:
    """plotly.min.js from the installed `plotly` package (its package data)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


@router.get("/console", response_class=HTMLResponse)
async def console() -> HTMLResponse:
    """The page's shell; what it shows is fetched from the API with the user's key."""
    return HTMLResponse((ASSETS / "index.html").read_text(encoding="utf-8"), headers=NO_STORE)


@router.get("/console/static/{name}")
async def console_asset(name: str) -> Response:
    """The page's own module and style, and the chart library; nothing else is served from here."""
    if name == "plotly.min.js":
        return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})
    if name not in OWN:
        return JSONResponse(error_body(f"No such console asset: {name!r}.", code="not_found"), status_code=404)
    return FileResponse(ASSETS / name, media_type=OWN[name], headers=NO_STORE)
