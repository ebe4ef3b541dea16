"""The recruiters' web app in a real browser (Debian's chromium through Playwright) against a
real stack: upload with auto-embed until searchable, search with filters, a result's row,
more like this, SQL with a download, a bad CSV's error, the status page, a phone-sized
screen, and no request leaving the gateway. Screenshots go to ``test-artifacts/web/``."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lakehouse.devtools.datagen import generate
from lakehouse.devtools.stack import Stack
from lakehouse.platform.procs import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ALL = ("catalog", "ingest", "query", "embed", "vectors")
SHOTS = REPO_ROOT / "test-artifacts" / "web"
TEMPLATE = "{role} in {city}, {state}. Skills: {skills}. Certifications: {certifications}."

pytestmark = [
    pytest.mark.slow,
    pytest.mark.stack(kinds=ALL, shared=True),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="browser tests need Debian's chromium (`apt-get install -y chromium`; "
        "`make test` installs it when it runs as root)",
    ),
]

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A fresh page that records every request it makes."""
    context = browser.new_context(accept_downloads=True, base_url=stack.base)
    p = context.new_page()
    p.set_default_timeout(30_000)
    p.requested = []
    p.on("request", lambda r: p.requested.append(r.url))
    yield p
    context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def only_local(page: Any, stack: Stack) -> None:
    outside = [u for u in page.requested if not u.startswith(stack.base)]
    assert outside == [], outside


def test_upload_search_row_more_like_this_sql_and_status(
    page: Any, stack: Stack, tmp_path: Path
) -> None:
    data = tmp_path / "workers.csv"
    generate(data, 200, seed=5)
    # Datasets: upload through the form with auto-embed, then the job until searchable.
    page.goto("/datasets")
    page.set_input_files("input[name=file]", str(data))
    page.fill("input[name=name]", "workers")
    page.check("#embed")
    page.fill("input[name=id_column]", "worker_id")
    page.fill("input[name=text_template]", TEMPLATE)
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#job .ok", timeout=240_000)
    assert page.locator("#upload-progress").evaluate("e => e.value") == 100
    assert "Searchable" in page.inner_text("#job")
    shot(page, "upload-searchable")
    page.goto("/datasets")
    assert "workers" in page.inner_text("table.list") and "200" in page.inner_text("table.list")
    shot(page, "datasets")
    page.goto("/datasets/workers")
    assert "resume_text" in page.inner_text("main")  # schema
    assert page.locator("text=registered").count() >= 1  # revision history
    shot(page, "dataset")

    # Find workers: meaning plus a structured filter; every result is in Illinois.
    page.goto("/")
    page.fill("#q", "forklift operator OSHA")
    page.click("summary:has-text('Filters')")
    page.select_option("select[name='f.state']", "IL")
    page.wait_for_selector("#results .card")
    page.click("#find button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#results .meta') &&"
        " /rows match/.test(document.querySelector('#results .meta').innerText)"
    )
    subs = page.locator("#results .card .sub").all_inner_texts()
    assert subs and all(s.endswith(", IL") for s in subs), subs
    assert "Forklift Operator" in subs[0]  # the closest match does the job asked for
    assert page.locator("#results mark").count() > 0  # query words highlighted
    assert "q=forklift" in page.url and "f.state=IL" in page.url  # bookmarkable
    shot(page, "find")
    # A result's whole row, then more like it.
    first = page.locator("#results .card").first
    first.locator("summary").click()
    assert "worker_id" in first.locator("details.row table").inner_text()
    first_id = first.get_attribute("data-id")
    first.locator("a.like").click()
    page.wait_for_selector(f"#results .meta:has-text('More like worker {first_id}')")
    ids = page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.id)")
    assert ids and first_id not in ids
    shot(page, "more-like-this")

    # SQL: Ctrl-Enter runs it; types in the header; the query is in the URL; CSV download.
    page.goto("/sql")
    page.fill("#q", "SELECT state, count(*) AS n FROM workers GROUP BY state ORDER BY state")
    page.press("#q", "Control+Enter")
    page.wait_for_selector("#sql-result table")
    assert "BIGINT" in page.inner_text("#sql-result thead")
    assert "q=SELECT" in page.url
    with page.expect_download() as dl:
        page.click("#sql-result a:has-text('CSV')")
    rows = list(csv.reader(io.StringIO(Path(dl.value.path()).read_text())))
    assert rows[0] == ["state", "n"] and sum(int(r[1]) for r in rows[1:]) == 200
    shot(page, "sql")
    page.fill("#q", "SELECT nope FROM workers")
    page.press("#q", "Control+Enter")
    page.wait_for_selector("#sql-result .error")
    assert "nope" in page.inner_text("#sql-result .error")  # DuckDB's message, inline

    # Status: every worker kind with its replicas, and the index's partitions.
    page.goto("/status")
    text = page.inner_text("main")
    for kind in ALL:
        assert kind in text
    assert "workers" in text and "Partition" in text
    shot(page, "status")
    only_local(page, stack)


def test_bad_csv_shows_the_row_in_the_page(page: Any, stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name\n1,Ann\n2,Bo,extra\n")
    page.goto("/datasets")
    page.set_input_files("input[name=file]", str(bad))
    page.fill("input[name=name]", "broken")
    page.click("#upload button[type=submit]")
    error = page.wait_for_selector("#job .error, #upload-error:not([hidden])", timeout=60_000)
    assert "row" in error.inner_text().lower(), error.inner_text()
    shot(page, "bad-csv")
    only_local(page, stack)


def test_phone_width_and_keyboard(browser: Any, stack: Stack) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, base_url=stack.base)
    p = context.new_page()
    try:
        for path in ("/", "/datasets", "/sql", "/status"):
            p.goto(path)
            width = p.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (path, width)
        shot(p, "phone-find")
        # Keyboard: Tab from the top reaches the navigation and then the page's controls.
        p.goto("/sql")
        focused = []
        for _ in range(8):
            p.keyboard.press("Tab")
            focused.append(
                p.evaluate("document.activeElement.textContent || document.activeElement.name")
            )
        assert any("Find workers" in (f or "") for f in focused)
    finally:
        context.close()


def test_sign_in_with_a_key_and_out(page: Any, stack: Stack) -> None:
    """With API keys configured the pages ask for one: the login form, a session cookie the
    page's own requests carry (the upload form included), and sign out."""
    import httpx

    from lakehouse.devtools.servers import wait_until
    from lakehouse.platform.auth import KeyStore, Role

    keys = stack.settings.keys_file
    key, _ = KeyStore(keys).create(Role.writer, label="browser")
    wait_until(lambda: httpx.get(f"{stack.base}/v1/catalog").status_code == 401, what="keys")
    try:
        page.goto("/datasets")
        assert "/login" in page.url
        page.fill("#key", "lh_00000000_wrong")
        page.click("form.login button[type=submit]")
        assert "not valid" in page.inner_text("form.login")
        page.fill("#key", key)
        page.click("form.login button[type=submit]")
        page.wait_for_url("**/datasets")
        cookie = next(c for c in page.context.cookies() if c["name"] == "lh_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and key not in cookie["value"]
        assert page.is_visible("input[name=file]")  # the upload form, for a writer
        shot(page, "signed-in")
        page.click("form.logout button")
        page.wait_for_url("**/login")
        page.goto("/sql")
        assert "/login" in page.url
        only_local(page, stack)
    finally:
        keys.unlink()  # the stack is shared: open again for the tests after this one
        wait_until(lambda: httpx.get(f"{stack.base}/v1/catalog").status_code == 200, what="open")
