"""The console (/console) in a real headless Chromium, driven by Playwright, against the service app of
tests/service/conftest.py (a real Ray head, vLLM serving the tiny model, storage in a temporary folder).

Slow (about 3 min on a quiet 2-core machine, the app's start included; more under load): one Ray job is paused,
resumed and trains 60 LoRA steps while the page watches its loss curve, is evaluated against the base, then the new
model answers in the playground; a second job is cancelled from the jobs list. Screenshots of the job page and the
playground go to the folder the run prints (RAYFIT_CONSOLE_SHOTS, or a temporary one); docs/console-*.png are copies
from this test.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.serve.lora_fixtures import QUESTION
from tests.service.conftest import ANSWER, KEYS, client, training_rows

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("RAYFIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():  # at import: one skip line for the module, and no Ray or vLLM started for nothing
    pytest.skip("no Chromium for the console tests; install it with `apt-get install chromium`.", allow_module_level=True)
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

    def hide(self, hidden: bool) -> None:
        """Make the page hidden or shown, as another tab in front or a minimised window would (headless has neither)."""
        self.page.evaluate(
            "h => { Object.defineProperty(document, 'hidden', {value: h, configurable: true}); "
            "document.dispatchEvent(new Event('visibilitychange')); }",
            hidden,
        )

    def elsewhere(self) -> list[str]:
        """Requests this tab made to anywhere but the app (a CDN, a font service, ...)."""
        app = urlsplit(self.url).netloc
        return [u for u in self.requested if u.startswith("http") and urlsplit(u).netloc != app]

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
    assert tab.elsewhere() == []  # offline: every asset and call goes to the app itself


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
    """The whole flow in one tab, on one job: create it with base vs tuned and a gate, pause and resume it, watch its
    curves, its evaluation, the playground, an alias, another tenant, unpublish. Over 60 s (1-2 min on a quiet 2-core
    machine, several under load) because the job really runs in Ray twice (paused, then resumed), trains 60 LoRA
    steps and is evaluated; the steps share that one job rather than each starting their own."""
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
    tab.page.fill("#eval-split", "0.25")  # 2 of the 8 rows held out for base vs tuned; the gate: tuned no worse than base
    tab.page.fill("#max-regression", "0")
    tab.page.check("#evaluate")
    tab.page.click("#create")
    tab.page.wait_for_function("() => location.hash.startsWith('#/jobs/ftjob-')")
    job_id = tab.page.url.rsplit("/", 1)[-1]
    tab.page.evaluate("() => { window.notReloaded = true; }")
    api = client(service["url"])

    # Paused as soon as its driver runs (before training starts), the run stops at its first step with a checkpoint
    # and one loss point; resumed, it trains on from there. On a quiet machine the 60 steps take about 2 s, less than
    # one poll, so the pause is also what makes the curve's growth visible to the page.
    tab.page.wait_for_selector("#job-status:text-is('running')", timeout=600_000)
    _click_confirmed(tab, "#job-head button.pause", f"/{job_id}/pause")
    tab.page.wait_for_selector("#job-status:text-is('paused')", timeout=600_000)
    assert api.fine_tuning.jobs.retrieve(job_id).status == "paused"
    paused_points = tab.points("loss-chart")
    assert paused_points >= 1
    _click_confirmed(tab, "#job-head button.resume", f"/{job_id}/resume")
    assert api.fine_tuning.jobs.retrieve(job_id).status in ("queued", "running")

    # A hidden tab asks nothing; shown again, it asks at once (this overlaps the resumed Ray job's start).
    tab.hide(True)
    tab.page.wait_for_timeout(2500)  # a poll already under way finishes
    asked = len(tab.requested)
    tab.page.wait_for_timeout(5000)  # two and a half of the job page's poll intervals
    assert tab.requested[asked:] == []
    with tab.page.expect_request(lambda r: f"/fine_tuning/jobs/{job_id}" in r.url, timeout=1000):
        tab.hide(False)

    seen = _watch_job(tab)
    assert seen[-1][1] == "succeeded", seen
    assert seen[-1][0] > paused_points, seen  # the curve gained points after the resume, in the same page
    assert tab.page.evaluate("() => window.notReloaded") is True  # the same document all along: no reload
    events = api.fine_tuning.jobs.list_events(job_id, limit=100).data
    losses = [e for e in events if e.type == "metrics" and "train_loss" in e.data]
    tab.page.wait_for_selector("#checkpoints")
    rates = [e for e in events if e.type == "metrics" and "learning_rate" in e.data]
    assert tab.points("loss-chart") == len(losses) >= 12 and tab.points("lr-chart") == len(rates) > 0
    assert tab.page.is_hidden("#rewards")  # no reward in an SFT job's metrics: no reward charts
    assert tab.page.inner_text("#rows").startswith("8 of 8 rows kept")
    assert tab.page.inner_text("#plan").strip()
    steps = tab.page.eval_on_selector_all("#checkpoints tr td:first-child", "tds => tds.map(t => t.textContent)")
    assert steps[0] == "60" and "30" in steps, steps  # a pause while training would add its own checkpoint
    model = tab.page.inner_text("#ft-model")
    assert model == f"ft:tiny:console:{job_id}"
    _assert_base_vs_tuned(tab, api, job_id, events)
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

    _click_confirmed(tab, f"tr[data-model='{model}'] button.unpublish", f"/v1/models/{model}")
    tab.page.wait_for_selector(f"tr[data-model='{model}']", state="detached")
    assert model not in [m.id for m in api.models.list().data]
    assert tab.elsewhere() == [] and not [u for u in tab.requested if KEYS["tenant_a"] in u]


def _click_confirmed(tab: Console, button: str, route: str) -> None:
    """Click `button` and dismiss its confirmation (no request to `route` follows), then click it and accept."""
    tab.confirm = False
    tab.page.click(button)
    tab.page.wait_for_timeout(500)  # a request the dismissal let through would be on its way by now
    assert not [u for u in tab.requested if route in u], f"a dismissed confirmation still called {route}"
    tab.confirm = True
    with tab.page.expect_response(lambda r: route in r.url and r.request.method in ("POST", "DELETE")) as answered:
        tab.page.click(button)
    assert answered.value.ok, answered.value.text()


def _assert_base_vs_tuned(tab: Console, api, job_id: str, events) -> None:
    """The evaluation table, the gate's decision and the samples side by side equal what the API recorded."""
    evaluation = next(e.data["evaluation"] for e in events if e.data and "evaluation" in e.data)
    gate = next(e for e in events if e.data and "gate" in e.data)
    assert gate.data["gate"]["passed"] is True and evaluation["eval_loss"]["tuned"] < evaluation["eval_loss"]["base"]
    rows = tab.page.eval_on_selector_all("#evaluation tr", "trs => trs.slice(1).map(r => [...r.cells].map(c => c.textContent))")
    shown = {metric: (float(b), float(t)) for metric, b, t in rows if b and t}
    assert shown["eval_loss"] == pytest.approx((evaluation["eval_loss"]["base"], evaluation["eval_loss"]["tuned"]), rel=1e-3)
    assert tab.page.inner_text("#gate") == gate.message and tab.page.get_attribute("#gate", "class") == "ok"
    job = api.fine_tuning.jobs.retrieve(job_id)
    samples = api.files.content(job.result_files[0]).json()["evaluation"]["samples"]
    cells = tab.page.eval_on_selector_all("#samples tr", "trs => trs.slice(1).map(r => [...r.cells].map(c => c.textContent))")
    assert cells == [[s["prompt"], s["reference"], s["base"], s["tuned"]] for s in samples] and len(cells) == 2


def test_cancel_from_the_list_the_status_filter_and_reward_curves(console, service):
    """A long job is cancelled from the jobs list (dismissed once, then confirmed); the filter shows it under
    `cancelled` only. Then GRPO-shaped metrics (reward, reward_<grader>, reward_std, kl, completion_length) are
    stored as its events, as a GRPO run's workers store them, and its page draws them."""
    from cluster.service import jobs
    from cluster.service.store import Store

    api = client(service["url"])
    file_id = api.files.create(file=("faq.jsonl", io.BytesIO(training_rows().encode())), purpose="fine-tune").id
    long_run = {"rayfit": {"spec": {"train": {"max_steps": 5000, "save_steps": 5000}}}}
    job_id = api.fine_tuning.jobs.create(model="tiny", training_file=file_id, suffix="cancel", extra_body=long_run).id
    tab = console()
    tab.enter_key(KEYS["tenant_a"])
    row = f"tr[data-job='{job_id}']"
    tab.page.wait_for_selector(f"{row} button.cancel")
    _click_confirmed(tab, f"{row} button.cancel", f"/{job_id}/cancel")
    tab.page.wait_for_selector(f"{row} td.status:text-is('cancelled')")
    assert api.fine_tuning.jobs.retrieve(job_id).status == "cancelled"
    tab.page.select_option("#status-filter", "cancelled")
    tab.page.wait_for_function("() => location.hash === '#/jobs?status=cancelled'")
    tab.page.wait_for_selector(f"{row} td.status")
    shown = tab.page.eval_on_selector_all("#jobs td.status", "tds => tds.map(t => t.textContent)")
    assert set(shown) == {"cancelled"}

    store = Store(str(service["storage"]))
    steps = [1, 2, 3, 4]
    grpo = [
        {"step": s, "total_steps": 4, "reward": 0.2 * s, "reward_exact": 0.25 * s, "reward_std": 0.3 / s, "kl": 0.01 * s,
         "completion_length": 20.0 + s, "learning_rate": 1e-5}
        for s in steps
    ]  # fmt: skip
    for data in grpo:
        jobs.add_event(store, job_id, f"Step {data['step']}/4: reward {data['reward']:.2f}", type="metrics", data=data)
    tab.go(f"#/jobs/{job_id}")
    tab.page.wait_for_selector("#rewards", state="visible")
    tab.page.wait_for_function("() => document.querySelector('#policy-chart')?.data?.length === 2")
    traces = tab.page.evaluate(
        "() => ['#reward-chart', '#policy-chart'].map(c => document.querySelector(c).data.map(t => [t.name, t.x, t.y]))"
    )
    want = {k: [d[k] for d in grpo] for k in grpo[0]}
    assert traces[0] == [
        ["reward", steps, want["reward"]],
        ["reward exact", steps, want["reward_exact"]],
        ["reward std", steps, want["reward_std"]],
    ]
    assert traces[1] == [["KL", steps, want["kl"]], ["completion length", steps, want["completion_length"]]]


def test_no_key_in_any_log(console, service):
    """Neither tenant's key is in any file Ray wrote for this app: the Serve proxy's and replicas' access logs, the
    controller's, the job drivers' and the dashboard's. The access logs are checked to hold console requests, so the
    search looks where requests are written."""
    tab = console()
    tab.enter_key(KEYS["tenant_a"])
    tab.page.wait_for_selector("#jobs td")
    logs = service["head"]["temp"] / "session_latest" / "logs"
    access = "".join(f.read_text(errors="replace") for f in (logs / "serve").glob("proxy_*.log"))
    assert "/svc/console" in access and "/svc/v1/fine_tuning/jobs" in access
    found = [
        f"{f.relative_to(logs)} holds {tenant}'s key"
        for f in logs.rglob("*")
        if f.is_file()
        for tenant, key in KEYS.items()
        if key.encode() in f.read_bytes()
    ]
    assert found == []
