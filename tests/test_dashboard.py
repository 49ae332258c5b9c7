"""The dashboard (/ui) in a real browser: Debian's chromium driven by Selenium, against a real
`conveyor serve` running real jobs in the engine.

One agent and one browser serve the whole module (each start costs seconds); each test logs in
as the caller it needs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from conftest import _fail_or_skip
from helpers import AgentProcess, eventually, sh

from conveyor import Client, Executor, JobState

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 60


@pytest.fixture(scope="module")
def agent(tmp_path_factory, test_image):
    home = tmp_path_factory.mktemp("dash") / "home"
    home.mkdir()
    a = AgentProcess(home).start()
    yield a
    a.stop()
    with Executor(home) as ex:
        ex.cleanup()


@pytest.fixture(scope="module")
def client(agent) -> Client:
    return Client(agent.home)


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        _fail_or_skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="conveyor-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def log_in(browser, agent, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(agent.url + "/ui/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    eventually("the jobs page after logging in", lambda: browser.current_url.endswith("/ui/jobs"), timeout=WAIT)


def text_of(browser, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id).text


def shown(browser, selector: str) -> str | None:
    """The text of what ``selector`` finds now (the list replaces its rows as it refreshes)."""
    return browser.execute_script("const n = document.querySelector(arguments[0]); return n && n.textContent", selector)


def open_job(browser, agent, job_id: str) -> None:
    browser.get(f"{agent.url}/ui/jobs/{job_id}")
    eventually("the job page", lambda: text_of(browser, "state"), timeout=WAIT)


def test_pages_need_a_token_and_the_login_keeps_it_in_a_strict_httponly_cookie(browser, agent):
    """Without this, anyone who reaches the port would see every job (or the token would sit
    where a script of the page could read it): the dashboard shows nothing before a login, a
    wrong token is told so, and the right one is kept in an HttpOnly, SameSite=Strict cookie."""
    from selenium.webdriver.common.by import By

    assert httpx.get(agent.url + "/ui/data/jobs").status_code == 401  # no open view unless the operator says so
    browser.delete_all_cookies()
    browser.get(agent.url + "/ui/jobs")
    assert "/ui/login" in browser.current_url
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    browser.find_element(By.ID, "login").click()
    assert "not valid" in text_of(browser, "login-error")
    log_in(browser, agent, agent.token)
    assert text_of(browser, "who") == "owner"
    (cookie,) = [c for c in browser.get_cookies() if c["name"] == "conveyor_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""
    # the cookie alone changes nothing: a request without the page's CSRF token is refused
    with httpx.Client(base_url=agent.url, cookies={"conveyor_session": agent.token}) as http:
        assert http.get("/v1/jobs").status_code == 200
        refused = http.post("/v1/jobs", json={"spec": {"image": "x", "command": ["true"]}})
        assert refused.status_code == 403 and refused.json()["code"] == "csrf"


def test_a_job_goes_from_queued_to_done_on_the_list_without_a_reload(browser, agent, client, test_image):
    """Without this, a person watching the list would see stale states (or have to reload):
    the row of a new job follows it through Queued, Running and Done from the event stream."""
    from selenium.webdriver.common.by import By

    log_in(browser, agent, agent.token)
    eventually("the list loaded", lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
    browser.execute_script("""
        window.notReloaded = true; window.seen = [];
        new MutationObserver((records) => { for (const r of records) for (const n of r.addedNodes) {
            const row = (n.parentElement || n).closest && (n.parentElement || n).closest("tr[data-job]");
            if (row && (n.parentElement || n).classList.contains("state")) window.seen.push([row.dataset.job, n.textContent]);
            if (n.matches && n.matches("tr[data-job]")) window.seen.push([n.dataset.job, n.querySelector(".state").textContent]);
        }}).observe(document.getElementById("rows"), {childList: true, subtree: true});
    """)
    job_id = client.submit(sh(test_image, "sleep 1; echo done", name="watched", network="none"), hold=True)
    row = f'tr[data-job="{job_id}"] .state'
    eventually("the held job on the list", lambda: shown(browser, row) == "QueuedHeld", timeout=WAIT)
    client.release(job_id)
    eventually("Done on the list", lambda: shown(browser, row) == "Done", timeout=WAIT)
    seen = [state for job, state in browser.execute_script("return window.seen") if job == job_id]
    assert browser.execute_script("return window.notReloaded") is True
    for state in ("QueuedHeld", "Queued", "Running", "Done"):
        assert state in seen, seen
    eventually("the count of Done jobs", lambda: shown(browser, '[data-count="Done"]') == "1")


def test_logs_are_followed_while_the_job_writes_them(browser, agent, client, test_image):
    """Without this, the job page would show output only once the job ended: its lines appear
    while it runs, stdout and stderr each in its own pane; a tail shows the last lines only, and
    each stream downloads whole."""
    from selenium.webdriver.common.by import By

    log_in(browser, agent, agent.token)
    script = "for i in 1 2 3 4 5 6; do echo out $i; echo err $i >&2; sleep 0.5; done"
    job_id = client.submit(sh(test_image, script, name="writer", network="none"))
    client.wait_started(job_id, timeout=WAIT)
    open_job(browser, agent, job_id)
    eventually("the first line while the job runs", lambda: "out 1" in text_of(browser, "stdout"), timeout=WAIT)
    assert client.info(job_id).state == JobState.RUNNING
    eventually("the last line", lambda: "out 6" in text_of(browser, "stdout"), timeout=WAIT)
    assert "err 6" in text_of(browser, "stderr") and "err" not in text_of(browser, "stdout")
    eventually("Done on the page", lambda: text_of(browser, "state") == "Done", timeout=WAIT)
    tail = browser.find_element(By.ID, "tail")
    tail.clear()
    tail.send_keys("2\n")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", tail)
    eventually("the last two lines only", lambda: text_of(browser, "stdout") == "out 5\nout 6", timeout=WAIT)
    link = browser.find_element(By.CSS_SELECTOR, 'a[href$="logs.txt?stream=stderr"]').get_attribute("href")
    saved = httpx.get(link, cookies={"conveyor_session": agent.token})
    assert saved.text == "".join(f"err {i}\n" for i in range(1, 7))
    assert saved.headers["content-disposition"].startswith("attachment")


def test_cancel_from_the_job_page_asks_first_and_ends_the_job(browser, agent, client, test_image):
    """Without this, the buttons would do nothing (or cancel would end a job without asking):
    suspend and resume act on the job, and cancel asks, then ends it once the person agrees."""
    from selenium.webdriver.common.by import By

    log_in(browser, agent, agent.token)
    job_id = client.submit(sh(test_image, "sleep 300", name="to-cancel", network="none", stop_grace=1))
    client.wait_started(job_id, timeout=WAIT)
    open_job(browser, agent, job_id)
    eventually("Running on the page", lambda: text_of(browser, "state") == "Running", timeout=WAIT)
    for verb, state in (("suspend", "Suspended"), ("resume", "Running")):  # the other buttons act too
        browser.find_element(By.CSS_SELECTOR, f'button[data-verb="{verb}"]').click()
        eventually(f"{state} on the page", lambda: text_of(browser, "state") == state, timeout=WAIT)
        assert client.info(job_id).state.value == state
    browser.find_element(By.CSS_SELECTOR, 'button[data-verb="cancel"]').click()
    dialog = browser.switch_to.alert
    assert job_id in dialog.text
    dialog.dismiss()  # said no: nothing happens
    time.sleep(0.5)
    assert client.info(job_id).state == JobState.RUNNING
    browser.find_element(By.CSS_SELECTOR, 'button[data-verb="cancel"]').click()
    browser.switch_to.alert.accept()
    eventually("Failed on the page", lambda: text_of(browser, "state") == "Failed", timeout=WAIT)
    assert client.info(job_id).state == JobState.FAILED
    assert browser.find_element(By.CSS_SELECTOR, 'button[data-verb="cancel"]').get_attribute("disabled")


def test_a_read_only_token_sees_the_refusal_naming_the_rule(browser, agent, client, test_image):
    """Without this, a token meant only to watch could hold, cancel or remove jobs from the
    dashboard: the agent refuses, and the page shows its refusal naming the policy rule."""
    from selenium.webdriver.common.by import By

    with agent.http() as http:
        made = http.post("/v1/tokens", json={"name": "viewer", "policy": "read_only: true\n"})
        assert made.status_code == 201, made.text
    job_id = client.submit(sh(test_image, "true", name="held-one", network="none"), hold=True)
    log_in(browser, agent, made.json()["token"])
    assert text_of(browser, "who") == "viewer"
    open_job(browser, agent, job_id)
    browser.find_element(By.CSS_SELECTOR, 'button[data-verb="release"]').click()
    eventually("the refusal", lambda: "read_only" in text_of(browser, "notice"), timeout=WAIT)
    assert "viewer" in text_of(browser, "notice")
    assert client.info(job_id).state == JobState.QUEUED_HELD
    client.cancel(job_id)


def test_untrusted_text_from_a_job_is_shown_as_text_and_never_run(browser, agent, client, test_image):
    """Without this, a job could run script in the browser of whoever looks at it: markup in a
    label and in its output is shown as the characters it is, and no alert ever opens. (A job's
    name cannot hold markup: the spec admits [A-Za-z0-9_.-] only.)"""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    evil = "<script>alert(1)</script>"
    image_tag = '<img src=x onerror="alert(2)">'
    log_in(browser, agent, agent.token)
    job_id = client.submit(sh(test_image, f"echo '{evil}'; echo '{image_tag}' >&2", name="evil",
                              labels={"note": evil, "pic": image_tag}, network="none"))
    client.wait(job_id, timeout=WAIT)
    browser.get(f"{agent.url}/ui/jobs?q=evil")
    row = f'tr[data-job="{job_id}"]'
    eventually("the row with the label as text", lambda: evil in (shown(browser, row) or ""), timeout=WAIT)
    open_job(browser, agent, job_id)
    eventually("the output", lambda: evil in text_of(browser, "stdout") and image_tag in text_of(browser, "stderr"),
               timeout=WAIT)
    assert f"note={evil}" in browser.find_element(By.CLASS_NAME, "meta").text
    assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text


def test_conveyor_ui_gives_the_dashboard_url_of_the_running_agent(agent):
    """Without this, a user would have to piece the dashboard's address together from the
    agent's log: `conveyor ui` prints it (and opens it where a browser is)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "conveyor", "--home", str(agent.home), "ui", "--print-only"],
                         capture_output=True, text=True, timeout=WAIT)
    assert (out.returncode, out.stdout.strip()) == (0, agent.url + "/ui")
    page = httpx.get(out.stdout.strip() + "/jobs", cookies={"conveyor_session": agent.token})
    assert page.status_code == 200 and 'data-page="jobs"' in page.text


def test_the_operators_open_view_reads_without_a_token_and_changes_nothing(tmp_path, test_image):
    """Without this, opening the dashboard to everyone ([agent] open_dashboard) would also open
    every action to everyone: callers without a token read the pages and the API, and each
    change is refused naming the rule; off by default, nothing is served without a token."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[agent]\nopen_dashboard = true\n")
    a = AgentProcess(home).start()
    try:
        job_id = Client(home).submit(sh(test_image, "true", name="visible", network="none"), hold=True)
        with httpx.Client(base_url=a.url, timeout=WAIT) as anyone:
            page = anyone.get("/ui/jobs")
            assert page.status_code == 200 and "(no token)" in page.text
            assert anyone.get("/ui/data/jobs").json()["jobs"][0]["id"] == job_id
            refused = anyone.post(f"/v1/jobs/{job_id}/release")
            assert refused.status_code == 403 and refused.json()["details"]["rule"] == "read_only"
            assert anyone.post("/v1/jobs", json={"spec": {"image": test_image, "command": ["true"]}}).status_code == 403
            # a POST that only reads (operations' reads_only) is let through: it waits, and times out
            assert anyone.post("/v1/wait-any", json={"ids": [job_id], "timeout": 0.1}).status_code == 408
        assert Client(home).info(job_id).state == JobState.QUEUED_HELD
    finally:
        a.stop()
        with Executor(home) as ex:
            ex.cleanup()


def test_the_list_filters_and_pages_without_losing_or_repeating_a_job(browser, agent, client, test_image):
    """Without this, a filter could show other jobs than asked, or paging skip or repeat some:
    the array, label, state and search filters each find exactly their jobs, and
    the pages of an array, walked with the page's Next button, hold each task once."""
    from selenium.webdriver.common.by import By

    array_id = client.submit_array(sh(test_image, "true", network="none"), 1, 7, hold=True)
    tagged = client.submit(sh(test_image, "true", name="tagged-one", labels={"batch": "b-77"}, network="none"), hold=True)
    with httpx.Client(base_url=agent.url, cookies={"conveyor_session": agent.token}, timeout=WAIT) as http:
        def ids(**params):
            return [j["id"] for j in http.get("/ui/data/jobs", params=params).json()["jobs"]]

        tasks = ids(array=array_id)
        assert len(tasks) == 7 and set(tasks) == {t for t, _, _ in client.array_tasks(array_id)}
        assert ids(label="batch=b-77") == [tagged] == ids(q="tagged-on")
        assert tagged in ids(state="QueuedHeld") and not {tagged, *tasks} & set(ids(state="Done"))
        counts = http.get("/ui/data/jobs").json()["counts"]
        assert counts["QueuedHeld"] >= 8
    log_in(browser, agent, agent.token)
    browser.get(f"{agent.url}/ui/jobs?array={array_id}&limit=3")
    seen: list[str] = []
    page: list[str] = []

    def rows() -> list[str]:
        return browser.execute_script("return document.body.dataset.loaded ? "
                                      "[...document.querySelectorAll('#rows tr[data-job]')].map(r => r.dataset.job) : []")

    for _ in range(10):
        # The next page, not the last one shown again (a live refresh may redraw it meanwhile).
        previous = page
        eventually("a new page of rows", lambda: rows() and rows() != previous, timeout=WAIT)
        page = rows()
        assert len(page) <= 3
        seen += page
        more = browser.find_element(By.ID, "more")
        if more.get_attribute("disabled"):
            break
        browser.execute_script("document.body.dataset.loaded = ''")
        more.click()
    assert sorted(seen) == sorted(tasks)
    client.cancel_array(array_id)
    client.cancel(tagged)


def test_outputs_array_grid_queue_and_node_pages_show_what_the_agent_knows(browser, agent, client, test_image):
    """Without this, the pages beyond the list could show nothing or stale figures: a job's
    output file is listed with its digest and downloads as its bytes, an array's grid recolours
    a task as it changes state, the queue says a held job waits for its hold, and the node page
    shows the engine answering and each live lease with its share."""
    import hashlib

    from selenium.webdriver.common.by import By

    log_in(browser, agent, agent.token)
    made = client.run(sh(test_image, "mkdir -p /out && echo result-bytes > /out/r.txt", name="maker", outputs=["/out"],
                         network="none"), timeout=WAIT)
    assert made.state == JobState.DONE, made.stderr
    open_job(browser, agent, made.id)
    (link,) = browser.find_elements(By.CSS_SELECTOR, 'a[href*="/outputs/content"]')
    assert link.text == "/out/r.txt"
    digest = "sha256:" + hashlib.sha256(b"result-bytes\n").hexdigest()
    assert digest in browser.find_element(By.TAG_NAME, "main").text
    got = httpx.get(link.get_attribute("href"), cookies={"conveyor_session": agent.token})
    assert got.content == b"result-bytes\n"

    array_id = client.submit_array(sh(test_image, "true", network="none"), 1, 3, hold=True)
    browser.get(f"{agent.url}/ui/arrays/{array_id}")
    cells = "#grid .cell.state-QueuedHeld"
    assert len(browser.find_elements(By.CSS_SELECTOR, cells)) == 3
    browser.get(f"{agent.url}/ui/queue")
    assert sum(1 for row in browser.find_elements(By.CSS_SELECTOR, "table.queue tbody tr") if "hold" in row.text) >= 3
    browser.get(f"{agent.url}/ui/arrays/{array_id}")
    eventually("the grid's scripts listening", lambda: shown(browser, "#grid .cell"), timeout=WAIT)
    time.sleep(0.5)  # the event stream connected
    client.release_array(array_id)
    eventually("every cell Done without a reload", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#grid .cell.state-Done")) == 3,
               timeout=WAIT)
    lease = client.lease_create(cpus=0.5, memory="64m", keepalive=60, labels={"holder": "dash-test"})
    browser.get(f"{agent.url}/ui/node")
    assert "up" in text_of(browser, "engine") and "docker" in text_of(browser, "engine")
    (row,) = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table.leases tbody tr") if lease["id"] in r.text]
    assert "0.5 CPUs" in row and "holder=dash-test" in row
    client.lease_release(lease["id"])


def test_a_login_posted_by_another_site_is_refused(agent):
    """Without this, another site's page could log a visitor's browser in with the attacker's
    own token (login CSRF) and watch what the visitor then does: a login whose Origin is not the
    dashboard's is refused and sets no cookie."""
    with httpx.Client(base_url=agent.url, timeout=WAIT) as http:
        evil = http.post("/ui/login", data={"token": agent.token}, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403 and "conveyor_session" not in evil.cookies
        own = http.post("/ui/login", data={"token": agent.token}, headers={"Origin": agent.url})
        assert own.status_code == 303 and own.cookies["conveyor_session"] == agent.token
