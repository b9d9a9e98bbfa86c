"""The console (/console) in a real headless Chromium, driven by Playwright, against the service app of
tests/service/conftest.py (a real Ray head, vLLM serving the tiny model, storage in a temporary folder).

Slow (about 3 min on a 2-core machine, nearly all of it the shared Ray head and vLLM start).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.service.conftest import KEYS, client, training_rows

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("RAYFIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Every route the page calls, without a key: each must answer 401.
DATA_CALLS = [
    ("GET", "/v1/files"),
    ("POST", "/v1/files"),
    ("GET", "/v1/fine_tuning/jobs?limit=100"),
    ("POST", "/v1/fine_tuning/jobs"),
    ("GET", "/v1/fine_tuning/jobs/ftjob-0"),
    ("GET", "/v1/fine_tuning/jobs/ftjob-0/events?limit=100"),
    ("GET", "/v1/fine_tuning/jobs/ftjob-0/checkpoints?limit=100"),
    ("POST", "/v1/fine_tuning/jobs/ftjob-0/cancel"),
    ("GET", "/v1/files/file-0/content"),
    ("GET", "/v1/models"),
    ("DELETE", "/v1/models/ft:tiny:x:ftjob-0"),
    ("GET", "/v1/rayfit/aliases"),
    ("PUT", "/v1/rayfit/aliases/prod"),
    ("POST", "/v1/rayfit/aliases/prod/rollback"),
    ("POST", "/v1/rayfit/plan"),
    ("POST", "/v1/chat/completions"),
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium for the console tests; install it with `apt-get install chromium` (Debian).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield found
        finally:
            found.close()


class Console:
    """One browser tab on the console, recording every URL it requests."""

    def __init__(self, browser, service):
        self.url = service["url"].removesuffix("/v1") + "/console"
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.confirm = True  # how the next confirmation is answered
        self.page.on("dialog", lambda d: d.accept() if self.confirm else d.dismiss())
        self.context.set_default_timeout(120_000)  # a shared 2-core machine: the data check or a first adapter load is slow
        self.page.goto(self.url)

    def enter_key(self, key: str, accepted: bool = True) -> None:
        self.page.fill("#key", key)
        self.page.click("#key-save")
        if accepted:  # the key was checked and the first view is shown
            self.page.wait_for_selector("#key-form", state="hidden")
            self.page.wait_for_selector("#view h2")

    def go(self, hash_: str) -> None:
        self.page.evaluate("h => { location.hash = h; }", hash_)

    def upload(self, name: str, text: str) -> None:
        self.page.set_input_files("#upload", {"name": name, "mimeType": "application/jsonl", "buffer": text.encode()})

    def points(self, chart: str) -> int:
        return self.page.evaluate(f"() => document.querySelector('#{chart}')?.data?.[0]?.x?.length ?? 0")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(browser, service):
    tabs: list[Console] = []

    def open_tab() -> Console:
        tabs.append(Console(browser, service))
        return tabs[-1]

    yield open_tab
    for tab in tabs:
        tab.close()


def test_the_page_needs_no_key_but_every_data_call_does(console, service):
    tab = console()
    assert tab.page.is_visible("#key-form") and tab.page.inner_text("#view") == ""
    assert tab.page.evaluate("() => typeof Plotly.react") == "function"  # served from the installed plotly package
    statuses = tab.page.evaluate(
        "async calls => Promise.all(calls.map(([m, p]) => fetch(location.pathname.replace(/\\/console$/, '') + p, "
        "{method: m, headers: {'Content-Type': 'application/json'}, body: m === 'GET' ? undefined : '{}'}).then(r => r.status)))",
        DATA_CALLS,
    )
    assert dict(zip([f"{m} {p}" for m, p in DATA_CALLS], statuses, strict=True)) == {f"{m} {p}": 401 for m, p in DATA_CALLS}

    tab.enter_key("sk-not-a-key", accepted=False)
    tab.page.wait_for_selector("#key-error:has-text('not accepted')")
    assert tab.page.evaluate("() => sessionStorage.length") == 0
    tab.enter_key(KEYS["tenant_a"])
    tab.page.wait_for_selector("#jobs")
    assert tab.page.is_hidden("#key-form")
    assert tab.page.evaluate("() => Object.values(sessionStorage)") == [KEYS["tenant_a"]]
    assert tab.page.evaluate("() => localStorage.length") == 0
    assert not [u for u in tab.requested if KEYS["tenant_a"] in u] and KEYS["tenant_a"] not in tab.page.url


def test_an_upload_with_two_bad_lines_names_both_and_stores_nothing(console, service):
    rows = training_rows().splitlines()
    rows[1] = '{"messages": [{"role": "user", "content": "cut off'
    rows[3] = json.dumps({"messages": [{"role": "user", "content": "no answer here"}]})
    tab = console()
    tab.enter_key(KEYS["tenant_a"])
    tab.go("#/new")
    tab.upload("bad.jsonl", "\n".join(rows))
    verdict = tab.page.wait_for_selector("#upload-error").inner_text()
    assert "2 of 8 lines" in verdict and "bad.jsonl:2: unparseable" in verdict and "bad.jsonl:4: no assistant turn" in verdict
    assert "bad.jsonl" not in [f.filename for f in client(service["url"]).files.list().data]
