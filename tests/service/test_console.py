"""The console (/console) in a real headless Chromium, driven by Playwright, against the service app of
tests/service/conftest.py (a real Ray head, vLLM serving the tiny model, storage in a temporary folder).

Slow (about 4-5 min on a 2-core machine): one Ray job trains 60 LoRA steps while the page watches its loss curve,
then the new model answers in the playground. Screenshots of the job page and the playground go to the folder the
run prints (RAYFIT_CONSOLE_SHOTS, or a temporary one); docs/console-*.png are copies from this test.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.serve.lora_fixtures import QUESTION
from tests.service.conftest import ANSWER, KEYS, client, training_rows

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


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("RAYFIT_CONSOLE_SHOTS") or tmp_path_factory.mktemp("console-shots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


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


def _aliases(service, tenant: str = "tenant_a") -> dict[str, str]:
    found = httpx.get(service["url"] + "/rayfit/aliases", headers={"Authorization": f"Bearer {KEYS[tenant]}"}).json()
    return {a["name"]: a["model"] for a in found["data"]}


def _watch_job(tab: Console, timeout_s: float = 600) -> list[tuple[int, str]]:
    """(loss points, status) each time either changes, until the job has finished; no reload in between."""
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = (tab.points("loss-chart"), tab.page.inner_text("#job-status"))
        if not seen or seen[-1] != now:
            seen.append(now)
        if now[1] in ("succeeded", "failed", "cancelled"):
            return seen
        tab.page.wait_for_timeout(250)  # a poll interval of the test itself, not a wait for a result
    pytest.fail(f"the job page did not show a finished job in {timeout_s} s: {seen}")


def test_a_job_from_upload_to_playground_and_alias(console, service, shots):
    tab = console()
    tab.enter_key(KEYS["tenant_a"])
    tab.go("#/new")
    tab.upload("faq.jsonl", training_rows())
    assert "faq.jsonl: accepted as file-" in tab.page.wait_for_selector("#upload-ok").inner_text()
    estimate = tab.page.wait_for_selector("#resolved, #plan-error")
    assert estimate.get_attribute("id") == "resolved", estimate.inner_text()
    assert tab.page.inner_text("[data-hyper=batch_size]") == "4" and tab.page.inner_text("[data-hyper=max_steps]") == "60"
    assert "memory" in tab.page.inner_text("#plan-text").lower()
    tab.page.fill("#suffix", "console")
    tab.page.click("#create")
    tab.page.wait_for_function("() => location.hash.startsWith('#/jobs/ftjob-')")
    job_id = tab.page.url.rsplit("/", 1)[-1]
    tab.page.evaluate("() => { window.notReloaded = true; }")

    seen = _watch_job(tab)
    assert seen[-1][1] == "succeeded", seen
    while_running = [n for n, status in seen if status == "running" and n > 0]
    assert while_running and seen[-1][0] > while_running[0], seen  # the curve gained points as the job ran
    assert tab.page.evaluate("() => window.notReloaded") is True  # the same document all along: no reload
    api = client(service["url"])
    events = api.fine_tuning.jobs.list_events(job_id, limit=100).data
    losses = [e for e in events if e.type == "metrics" and "train_loss" in e.data]
    tab.page.wait_for_selector("#checkpoints")
    rates = [e for e in events if e.type == "metrics" and "learning_rate" in e.data]
    assert tab.points("loss-chart") == len(losses) >= 12 and tab.points("lr-chart") == len(rates) > 0
    assert tab.page.inner_text("#rows").startswith("8 of 8 rows kept")
    assert tab.page.inner_text("#plan").strip()
    steps = tab.page.eval_on_selector_all("#checkpoints tr td:first-child", "tds => tds.map(t => t.textContent)")
    assert steps == ["60", "30"]
    model = tab.page.inner_text("#ft-model")
    assert model == f"ft:tiny:console:{job_id}"
    tab.page.screenshot(path=str(shots / "console-job.png"), full_page=True)

    tab.go(f"#/playground?a=tiny&b={model}")
    tab.page.wait_for_selector("#ask")
    tab.page.fill("#prompt", QUESTION)
    tab.page.click("#ask")
    tab.page.wait_for_selector("#out-a[data-done]")
    tab.page.wait_for_selector("#out-b[data-done]")
    assert ANSWER in tab.page.inner_text("#out-b") and ANSWER not in tab.page.inner_text("#out-a")
    tab.page.screenshot(path=str(shots / "console-playground.png"), full_page=True)

    checkpoint = f"{model}:ckpt-step-30"
    tab.go("#/models")
    row = tab.page.wait_for_selector(f"tr[data-model='{model}']")
    assert "tiny" in row.inner_text() and job_id in row.inner_text()  # parent and job: the model's lineage
    for target in (checkpoint, model):
        tab.page.fill("#alias-name", "prod")
        tab.page.select_option("#alias-target", target)
        tab.page.click("#alias-point")
        tab.page.wait_for_selector(f"tr[data-alias=prod] td.current:text-is('{target}')")
    assert tab.page.inner_text("tr[data-alias=prod] td.previous") == checkpoint
    tab.confirm = False
    tab.page.click("tr[data-alias=prod] button.rollback")
    assert _aliases(service)["prod"] == model  # dismissed: unchanged
    tab.confirm = True
    tab.page.click("tr[data-alias=prod] button.rollback")
    tab.page.wait_for_selector(f"tr[data-alias=prod] td.current:text-is('{checkpoint}')")
    assert tab.page.inner_text("tr[data-alias=prod] td.previous") == model

    other = console()
    other.enter_key(KEYS["tenant_b"])
    other.page.wait_for_selector("#jobs")
    other.page.wait_for_selector("#jobs td")
    assert job_id not in other.page.inner_text("#jobs")
    other.go(f"#/jobs/{job_id}")
    assert job_id in other.page.wait_for_selector("#not-found").inner_text()
    other.go("#/models")
    other.page.wait_for_selector("#aliases")
    assert model not in other.page.inner_text("#models") and "prod" not in other.page.inner_text("#aliases")
    assert "ft:tiny:console" not in other.page.inner_text("#view")
