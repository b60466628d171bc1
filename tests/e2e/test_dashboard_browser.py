"""The dashboard in a real browser: Debian's headless chromium driven by Selenium through chromedriver, against
real overnight servers (fake backend with latency, so batches stay in progress long enough to watch).

Without chromium/chromedriver (`scripts/install-chromium` installs them) these tests skip and say so; under
`CI=true` they fail instead. `OVERNIGHT_DASHBOARD_SCREENSHOT=PATH` saves a screenshot of a batch's page there
(that is how `docs/dashboard.png` is made).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import anthropic
import httpx
import pytest

from tests.api.helpers import make_requests, request, wait_for_end
from tests.conftest import start_server
from tests.server import ServerProcess

KEY = "browser-key"
SCREENSHOT_ENV = "OVERNIGHT_DASHBOARD_SCREENSHOT"
WAIT_S = 60.0

pytestmark = pytest.mark.slow


def _missing(reason: str) -> NoReturn:
    message = f"dashboard browser test cannot run: {reason} (run scripts/install-chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    warnings.warn(message, pytest.PytestWarning, stacklevel=2)  # loud: in the warnings summary, not only -rs
    pytest.skip(message)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(downloads: Path) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        _missing("Debian's chromium and chromium-driver are not installed")
    # Both paths are given and Selenium Manager is told to stay offline: it must never download a browser.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.set_page_load_timeout(WAIT_S)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Keys configured; 300 ms per request, two at a time: 24 requests take at least 3.6 s, long enough to watch."""
    proc = start_server(
        tmp_path_factory.mktemp("browser"),
        ["--api-key", f"{KEY}:team", "--fake-latency-ms", "300", "--concurrency", "2", "--log-level", "debug"],
    )
    yield proc
    proc.terminate_quietly()


def _wait(driver: Any, predicate: Callable[[Any], Any], what: str, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page re-renders its tables while polling: an element found a moment ago may be gone; look again.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    try:
        return wait.until(predicate)
    except TimeoutException:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; page text:\n"
            f"{driver.find_element('tag name', 'body').text[:3000]}"
        ) from None


def _by_id(driver: Any, element_id: str) -> Any:
    return driver.find_element("id", element_id)


def _visible(driver: Any, element_id: str) -> bool:
    return bool(_by_id(driver, element_id).is_displayed())


def _stat(driver: Any, box: str, key: str) -> str:
    return str(driver.find_element("css selector", f"#{box} dd[data-stat='{key}']").text)


def _confirm(driver: Any, expected_text: str) -> None:
    _wait(driver, lambda d: _visible(d, "confirm-dialog"), "the confirmation dialog")
    assert expected_text in _by_id(driver, "confirm-text").text
    _by_id(driver, "confirm-yes").click()
    _wait(driver, lambda d: not _visible(d, "confirm-dialog"), "the confirmation dialog to close")


def _assert_no_page_errors(driver: Any) -> None:
    """No uncaught script error and nothing the CSP blocked (failed 401 fetches are expected)."""
    entries = driver.get_log("browser")
    bad = [e["message"] for e in entries if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]]
    assert not bad, "errors in the browser console:\n" + "\n".join(bad)


def _sign_in(driver: Any, server: ServerProcess, *, wrong_key_first: bool = True) -> None:
    driver.get(f"{server.base_url}/ui")
    _wait(driver, lambda d: _visible(d, "sign-in-view"), "the sign-in form")
    assert not _visible(driver, "list-view")

    key_input = _by_id(driver, "api-key")
    if wrong_key_first:
        key_input.send_keys("not-the-key")
        _by_id(driver, "sign-in").click()
        _wait(driver, lambda d: _visible(d, "sign-in-error"), "the refusal of a wrong key")
        assert "not accepted" in _by_id(driver, "sign-in-error").text
        assert driver.execute_script("return sessionStorage.length") == 0

    key_input.clear()
    key_input.send_keys(KEY)
    _by_id(driver, "sign-in").click()
    _wait(driver, lambda d: _visible(d, "list-view"), "the batch list after signing in")
    assert _by_id(driver, "mode").text == "signed in"
    # The key lives in this tab's sessionStorage only: not in the URL, not in localStorage or a cookie.
    assert driver.execute_script("return sessionStorage.getItem('overnight.apiKey')") == KEY
    assert driver.execute_script("return localStorage.length") == 0
    assert driver.get_cookies() == []
    assert KEY not in driver.current_url


def _write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _submit(driver: Any, path: Path) -> None:
    _by_id(driver, "submit-file").send_keys(str(path))
    _by_id(driver, "submit").click()


def test_sign_in_submit_watch_results_cancel_delete(
    driver: Any,
    keyed_server: ServerProcess,
    tmp_path: Path,
    downloads: Path,
    make_client: Callable[..., anthropic.Anthropic],
) -> None:
    sdk = make_client(keyed_server, api_key=KEY)
    _sign_in(driver, keyed_server)

    # A file with a repeated custom_id is refused in the browser, naming the line; nothing is sent.
    bad = _write_jsonl(tmp_path / "bad.jsonl", [request("same"), request("other"), request("same")])
    _submit(driver, bad)
    _wait(driver, lambda d: "line 3" in _by_id(d, "submit-status").text, "the bad file's line to be named")
    assert "Nothing was sent" in _by_id(driver, "submit-status").text
    not_json = tmp_path / "not-json.jsonl"
    not_json.write_text(json.dumps(request("fine")) + "\n{oops\n")
    _submit(driver, not_json)
    _wait(driver, lambda d: "line 2: not valid JSON" in _by_id(d, "submit-status").text, "the broken line named")
    # One the browser cannot judge (custom_id's allowed characters) is refused by the server, in its words.
    _submit(driver, _write_jsonl(tmp_path / "bad-id.jsonl", [request("has a space")]))
    _wait(driver, lambda d: "refused" in _by_id(d, "submit-status").text, "the server's refusal")
    assert "invalid_request_error" in _by_id(driver, "submit-status").text
    assert list(sdk.messages.batches.list()) == []

    # 20 answers and 4 errors (the fake backend errors a missing max_tokens), submitted from the browser.
    lines: list[dict[str, Any]] = []
    for i in range(24):
        if i % 6 == 3:
            lines.append(
                {
                    "custom_id": f"broken-{i:02d}",
                    "params": {"model": "m", "messages": [{"role": "user", "content": "no max_tokens here"}]},
                }
            )
        else:
            lines.append(request(f"q-{i:02d}", f"the answer to question {i} is long enough to read"))
    _submit(driver, _write_jsonl(tmp_path / "questions.jsonl", lines))
    _wait(driver, lambda d: d.current_url.split("#")[-1].startswith("/batches/msgbatch_"), "the new batch's page")
    batch_id = driver.current_url.split("#/batches/")[1]
    assert _by_id(driver, "batch-id").text == batch_id

    # Watch the progress bar move until every request is done.
    seen: set[tuple[str, int]] = set()

    def ended(d: Any) -> bool:
        bar = _by_id(d, "batch-progress")
        status = _by_id(d, "batch-status").text
        seen.add((status, int(bar.get_attribute("aria-valuenow") or -1)))
        return bool(status == "ended")

    _wait(driver, ended, "the batch to end")
    assert _by_id(driver, "batch-progress").get_attribute("aria-valuenow") == "24"
    assert _by_id(driver, "batch-progress").get_attribute("aria-valuemax") == "24"
    assert any(status == "in_progress" and done < 24 for status, done in seen), seen
    assert _stat(driver, "batch-counts", "succeeded") == "20"
    assert _stat(driver, "batch-counts", "errored") == "4"
    assert _stat(driver, "batch-counts", "processing") == "0"
    assert "requests/s" in _stat(driver, "batch-timings", "throughput")
    usage = httpx.get(
        f"{keyed_server.base_url}/v1/overnight/batches/{batch_id}/usage", headers={"x-api-key": KEY}
    ).json()
    assert usage["input_tokens"] > 0
    # Usage is fetched beside the batch, so it may show the poll before the last results for a moment.
    _wait(
        driver,
        lambda d: (
            _stat(d, "batch-usage", "input_tokens") == f"{usage['input_tokens']:,}"
            and _stat(d, "batch-usage", "output_tokens") == f"{usage['output_tokens']:,}"
        ),
        "the batch's final token usage",
    )

    # The whole JSONL, downloaded through the browser (fetched with the key header, saved from a blob).
    _by_id(driver, "download-results").click()
    saved = downloads / f"{batch_id}_results.jsonl"
    _wait(driver, lambda d: saved.exists() and saved.stat().st_size > 0, "the downloaded results file")
    api_body = httpx.get(f"{keyed_server.base_url}/v1/messages/batches/{batch_id}/results", headers={"x-api-key": KEY})
    assert saved.read_bytes() == api_body.content

    # Results, paged 20 at a time.
    _wait(driver, lambda d: len(d.find_elements("css selector", "#results tr.result-row")) == 20, "a results page")
    assert _by_id(driver, "results-next").is_enabled() and not _by_id(driver, "results-prev").is_enabled()
    if os.environ.get(SCREENSHOT_ENV):
        driver.save_screenshot(os.environ[SCREENSHOT_ENV])
    _by_id(driver, "results-next").click()
    _wait(driver, lambda d: len(d.find_elements("css selector", "#results tr.result-row")) == 4, "the last page")
    assert [row.get_attribute("data-custom-id") for row in driver.find_elements("css selector", "#results tr")[1:]] == [
        "q-20",
        "broken-21",
        "q-22",
        "q-23",
    ]

    # Only the errors, and one opened in full.
    from selenium.webdriver.support.ui import Select

    Select(_by_id(driver, "result-type")).select_by_value("errored")
    _wait(
        driver,
        lambda d: (
            [r.get_attribute("data-custom-id") for r in d.find_elements("css selector", "#results tr.result-row")]
            == ["broken-03", "broken-09", "broken-15", "broken-21"]
        ),
        "the errored results only",
    )
    driver.find_element("css selector", "#results tr[data-custom-id='broken-09']").click()
    _wait(driver, lambda d: _visible(d, "result-dialog"), "the result dialog")
    full = json.loads(_by_id(driver, "result-json").text)
    assert full["custom_id"] == "broken-09" and full["result"]["type"] == "errored"
    assert "max_tokens" in _by_id(driver, "result-text").text
    _by_id(driver, "result-close").click()

    # A success, read in full (the table's summary is cut; the dialog is not).
    Select(_by_id(driver, "result-type")).select_by_value("succeeded")
    custom_id_filter = _by_id(driver, "custom-id-filter")
    custom_id_filter.send_keys("q-17\n")
    _wait(driver, lambda d: len(d.find_elements("css selector", "#results tr.result-row")) == 1, "q-17 alone")
    driver.find_element("css selector", "#results tr[data-custom-id='q-17']").click()
    _wait(driver, lambda d: _visible(d, "result-dialog"), "the result dialog")
    assert _by_id(driver, "result-text").text == "the answer to question 17 is long enough to read"
    _by_id(driver, "result-close").click()

    # Cancel another batch while it runs (400 requests at ~7/s would take a minute).
    long_batch = sdk.messages.batches.create(requests=make_requests(400, prefix="long"))  # type: ignore[arg-type]
    driver.get(f"{keyed_server.base_url}/ui#/")
    _wait(
        driver,
        lambda d: d.find_elements("css selector", f"#batches tr[data-batch-id='{long_batch.id}']"),
        "the running batch in the list",
    )
    row_selector = f"#batches tr[data-batch-id='{long_batch.id}']"
    assert "in_progress" in driver.find_element("css selector", row_selector).text

    def list_progress(d: Any) -> int:
        bar = d.find_element("css selector", f"{row_selector} .progress")
        return int(bar.get_attribute("aria-valuenow"))

    # The list refreshes itself: the running batch's bar moves without a reload.
    first_seen = list_progress(driver)
    _wait(driver, lambda d: list_progress(d) > first_seen, "the list's progress bar to move")
    row = driver.find_element("css selector", row_selector)
    row.find_element("tag name", "a").click()
    _wait(driver, lambda d: _by_id(d, "batch-id").text == long_batch.id, "the running batch's page")
    assert not _by_id(driver, "delete-batch").is_enabled()  # only an ended batch can be deleted
    _by_id(driver, "cancel-batch").click()
    _by_id(driver, "confirm-no").click()  # "Keep it" changes nothing
    assert sdk.messages.batches.retrieve(long_batch.id).cancel_initiated_at is None
    _by_id(driver, "cancel-batch").click()
    _confirm(driver, f"Cancel batch {long_batch.id}?")
    _wait(driver, lambda d: _by_id(d, "batch-status").text == "ended", "the canceled batch to end")
    canceled = int(_stat(driver, "batch-counts", "canceled"))
    assert canceled > 0
    final = sdk.messages.batches.retrieve(long_batch.id)
    assert final.cancel_initiated_at is not None and final.request_counts.canceled == canceled

    # Delete it, with confirmation; back on the list it is gone.
    _by_id(driver, "delete-batch").click()
    _confirm(driver, f"Delete batch {long_batch.id}")
    _wait(driver, lambda d: _visible(d, "list-view"), "the list after deleting")
    assert f"Deleted {long_batch.id}" in _by_id(driver, "flash").text
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.retrieve(long_batch.id)
    _wait(
        driver,
        lambda d: not d.find_elements("css selector", f"#batches tr[data-batch-id='{long_batch.id}']"),
        "the deleted batch to leave the list",
    )
    assert driver.find_elements("css selector", f"#batches tr[data-batch-id='{batch_id}']")

    _assert_no_page_errors(driver)
    # The server's logs (its access log included, at debug) never saw the key: only the harness's start
    # banner, which shows the command line, names it.
    logs = keyed_server.stdout_path.read_text() + keyed_server.stderr_path.read_text()
    assert f"GET /v1/overnight/batches/{batch_id}/results?" in logs, "no access log to check"
    assert not [line for line in logs.splitlines() if KEY in line and not line.startswith("===== start")]
    _by_id(driver, "sign-out").click()
    _wait(driver, lambda d: _visible(d, "sign-in-view"), "the sign-in form after signing out")
    assert driver.execute_script("return sessionStorage.length") == 0


def test_open_mode_needs_no_sign_in(
    driver: Any, server: ServerProcess, make_client: Callable[..., anthropic.Anthropic]
) -> None:
    sdk = make_client(server)
    batch = sdk.messages.batches.create(requests=make_requests(3, prefix="open"))  # type: ignore[arg-type]
    wait_for_end(sdk, batch.id, total=3)
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{server.base_url}/ui")
    _wait(driver, lambda d: _visible(d, "list-view"), "the batch list without signing in")
    assert not _visible(driver, "sign-in-view")
    assert "open mode" in _by_id(driver, "mode").text
    _wait(
        driver,
        lambda d: d.find_elements("css selector", f"#batches tr[data-batch-id='{batch.id}']"),
        "the batch in the list",
    )
    assert "3/3" in driver.find_element("css selector", f"#batches tr[data-batch-id='{batch.id}']").text
    assert _stat(driver, "workspace-usage", "batches") != "0"
    driver.get(f"{server.base_url}/ui#/batches/msgbatch_000000000000000000000000")
    _wait(driver, lambda d: "not_found_error" in _by_id(d, "flash").text, "the unknown batch's error")
    assert _by_id(driver, "batch-status").text == "" and not _visible(driver, "results-panel")
    _assert_no_page_errors(driver)


def test_batch_page_rides_out_a_server_restart(
    driver: Any, server_factory: Callable[..., ServerProcess], make_client: Callable[..., anthropic.Anthropic]
) -> None:
    proc = server_factory("--api-key", f"{KEY}:team", "--fake-latency-ms", "150", "--concurrency", "2")
    sdk = make_client(proc, api_key=KEY)
    batch = sdk.messages.batches.create(requests=make_requests(300, prefix="restart"))  # type: ignore[arg-type]
    _sign_in(driver, proc, wrong_key_first=False)
    driver.get(f"{proc.base_url}/ui#/batches/{batch.id}")
    _wait(driver, lambda d: _by_id(d, "batch-status").text == "in_progress", "the running batch's page")

    proc.stop()
    _wait(driver, lambda d: "could not be reached" in _by_id(d, "flash").text, "the lost connection to show")
    done_before = int(_by_id(driver, "batch-progress").get_attribute("aria-valuenow"))
    proc.restart(same_port=True)  # same origin: the tab keeps its key
    # Polling resumes by itself (every 5 s while the server is away): the message goes, progress moves on.
    _wait(driver, lambda d: not _visible(d, "flash"), "the page to reconnect")
    _wait(
        driver,
        lambda d: int(_by_id(d, "batch-progress").get_attribute("aria-valuenow")) > done_before,
        "progress after the restart",
    )
    sdk.messages.batches.cancel(batch.id)
    _wait(driver, lambda d: _by_id(d, "batch-status").text == "ended", "the canceled batch to end")


def test_archived_batch_says_its_results_are_gone(
    driver: Any, server_factory: Callable[..., ServerProcess], make_client: Callable[..., anthropic.Anthropic]
) -> None:
    proc = server_factory("--results-retention", "1", "--sweep-interval", "0.2")  # open mode
    sdk = make_client(proc)
    batch = sdk.messages.batches.create(requests=make_requests(2, prefix="old"))  # type: ignore[arg-type]
    wait_for_end(sdk, batch.id, total=2)
    _wait(driver, lambda d: sdk.messages.batches.retrieve(batch.id).archived_at is not None, "archival")
    driver.get(f"{proc.base_url}/ui#/batches/{batch.id}")
    _wait(driver, lambda d: _by_id(d, "batch-status").text == "ended", "the archived batch's page")
    assert "archived" in _by_id(driver, "results-pending").text
    assert not _visible(driver, "results-panel")
    assert not _by_id(driver, "download-results").is_enabled()
    assert _stat(driver, "batch-counts", "succeeded") == "2"
