"""spool-console in a real browser: headless Chromium driven over WebDriver
logs in, sees a queue's counts change, follows a running job's progress bar,
retries a dead job and sees it run, and finds the fleet on the workers page.
Screenshots go to target/console-screenshots/."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest
from conftest import ROOT, Worker, binary, free_port

from spool_client import JobState, Queue

ADMIN = "browser-admin-token-0123456789"
SHOTS = ROOT / "target" / "console-screenshots"


def until(what: str, ok: Callable[[], bool], timeout: float = 30) -> None:
    """Polls `ok`; the page redraws itself every two seconds, so an element
    read mid-redraw (stale, or gone) counts as not yet."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            if ok():
                return
        except WebDriverException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_the_dashboard_in_headless_chromium(redis_url: str) -> None:
    if not shutil.which("chromedriver") or not shutil.which("chromium"):
        if os.environ.get("SPOOL_REQUIRE_ALL_TESTS", "0") != "0":
            raise AssertionError("chromium and chromium-driver are needed (scripts/deps.sh)")
        pytest.skip("SKIPPED: no chromium/chromedriver here")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(
        os.environ,
        SPOOL_REDIS_URL=redis_url,
        SPOOL_CONSOLE_ADDR=f"127.0.0.1:{port}",
        SPOOL_CONSOLE_TOKEN=ADMIN,
    )
    console = subprocess.Popen([str(binary("spool-console"))], env=env)
    worker = Worker("sleep_worker", redis_url, "renders", SPOOL_LEASE="2s")
    opts = webdriver.ChromeOptions()
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1366,900",
    ):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "chromium"
    browser = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    q = Queue(redis_url, "renders")

    def present(css: str) -> bool:
        return bool(browser.find_elements(By.CSS_SELECTOR, css))

    try:
        q.enqueue({"sleep_ms": 10})
        base = f"http://127.0.0.1:{port}"
        until("the console", lambda: _up(base))
        browser.get(base + "/")
        until("the login form", lambda: bool(browser.find_elements(By.NAME, "token")))
        browser.find_element(By.NAME, "token").send_keys(ADMIN)
        browser.find_element(By.CSS_SELECTOR, "#login button").click()
        until(
            "the queues table",
            lambda: bool(browser.find_elements(By.CSS_SELECTOR, "tr[data-queue=renders]")),
        )
        browser.save_screenshot(str(SHOTS / "overview.png"))

        def completed() -> int:
            cells = browser.find_elements(
                By.CSS_SELECTOR, "tr[data-queue=renders] td[data-state=completed]"
            )
            return int(cells[0].text.replace(",", "")) if cells else -1

        before = completed()
        q.enqueue_many([{"sleep_ms": 10}] * 5)
        until("the completed count to grow by 5", lambda: completed() >= before + 5)

        # A running job's page: its progress bar advances.
        long_id = q.enqueue({"sleep_ms": 4000})
        browser.get(f"{base}/#/q/renders/job/{long_id}")
        bar = lambda: float(browser.find_element(By.ID, "bar").get_attribute("value") or 0)  # noqa: E731
        until("progress", lambda: bar() > 0)
        first = bar()
        until("more progress", lambda: bar() > first)
        browser.save_screenshot(str(SHOTS / "job.png"))
        until(
            "the job to complete", lambda: browser.find_element(By.ID, "state").text == "completed"
        )

        # The workers page shows the fleet.
        browser.get(f"{base}/#/workers")
        until(
            "a worker row", lambda: bool(browser.find_elements(By.CSS_SELECTOR, "tr[data-worker]"))
        )
        browser.save_screenshot(str(SHOTS / "workers.png"))

        # A job whose worker was killed on its only attempt ends dead.
        dead_id = q.enqueue({"sleep_ms": 20000}, max_attempts=1, lease=2)
        until("the job to start", lambda: q.get(dead_id).state is JobState.ACTIVE)
        worker.proc.kill()
        worker.proc.wait()
        # The next worker's sweep finds the lease run out: no attempt left.
        worker = Worker("sleep_worker", redis_url, "renders", SPOOL_LEASE="2s")
        until("the job to die", lambda: q.get(dead_id).state is JobState.DEAD)
        browser.get(f"{base}/#/q/renders/dead")
        until(
            "the dead job listed",
            lambda: bool(browser.find_elements(By.CSS_SELECTOR, f"[data-retry='{dead_id}']")),
        )
        browser.save_screenshot(str(SHOTS / "dead.png"))
        # Retried, it runs again: attempts restart and the worker takes it.
        browser.find_element(By.CSS_SELECTOR, f"[data-retry='{dead_id}']").click()
        until("the retried job running", lambda: q.get(dead_id).state is JobState.ACTIVE)
        assert q.stats().dead == 0
    finally:
        browser.quit()
        worker.stop()
        console.terminate()
        console.wait()


def _up(base: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(base + "/healthz", timeout=1).close()
        return True
    except OSError:
        return False
