"""The review page in a real headless Chromium (Debian's chromium driven by Playwright): the queue loads, a
correction is written, a record discarded (keyboard) and one flagged, the per-run summary follows, a stale edit
shows a conflict, model output with HTML in it is shown as text, and a token guards a page bound beyond loopback.
Chromium is installed by the test set-up (apt) where it is missing; the tests skip, saying why, where it cannot be."""

import threading
import time

import pytest

from conftest import SHOTS, free_port as _free_port
from tasks.backends.reviewstore import ReviewStore
from tasks.core.sftrecords import SftCandidate
from test_review import _record

HOSTILE = "<script>window.pwned = 1</script><b>bold</b> & <img src=x onerror=\"window.pwned = 2\">"


@pytest.fixture
def page_of(tmp_path, browser):
    """(store, url, page): a review page served from a fresh SQLite store by uvicorn in a thread."""
    import uvicorn

    from tasks.ops.reviewpage import create_app

    store = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    records = [_record(1, quality_score=0.12, model_response=HOSTILE), _record(2, quality_score=0.55),
               _record(3, quality_score=0.85), _record(4, run="run-b", quality_score=0.3, task_type="math")]
    store.add([SftCandidate(**r) for r in records], "importer")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, None, "tester"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    yield store, f"http://127.0.0.1:{port}", page
    page.close()
    server.should_exit = True
    thread.join(10)


def _summary(page) -> dict:
    cells = page.locator("#summary tr").nth(1).locator("td").all_inner_texts()
    return dict(zip(["run", "total", "needs_review", "approved", "discarded", "model_rejected"], cells))


def test_review_queue_correct_discard_flag_and_summary(page_of):
    store, url, page = page_of
    page.goto(url)
    cards = page.locator("article.card")
    assert cards.count() == 4
    assert cards.nth(0).get_attribute("data-id") == "rec-1"  # the worst failure leads the queue
    assert [cards.nth(i).locator(".score").get_attribute("class") for i in range(4)] == \
        ["score red", "score red", "score orange", "score yellow"]
    assert cards.nth(0).locator(".chip").all_inner_texts()[:2] == ["model", "instruction"]
    # HTML in a model response is text: shown literally, never run or rendered
    response = cards.nth(0).locator("pre.response")
    assert response.inner_text() == HOSTILE and response.locator("b, img, script").count() == 0
    assert page.evaluate("window.pwned") is None
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-queue.png"), full_page=True)
    assert _summary(page)["needs_review"] == "3"  # run-a: rec-1..3
    # write a correction on the first card (c focuses the correction, then the approve button)
    page.keyboard.press("c")
    page.keyboard.type("The right answer.")
    with page.expect_navigation():
        cards.nth(0).locator("button.approve").click()
    assert store.get("rec-1")["status"] == "approved" and store.get("rec-1")["corrected_response"] == "The right answer."
    assert store.get("rec-1")["updated_by"] == "tester"
    assert _summary(page)["approved"] == "1" and _summary(page)["needs_review"] == "2"
    # discard with the keyboard: j moves to the second card (rec-4, run-b), j again to rec-2, d discards it
    page.keyboard.press("j")
    page.keyboard.press("j")
    with page.expect_navigation():
        page.keyboard.press("d")
    assert store.get("rec-2")["status"] == "discarded"
    with page.expect_navigation():
        page.locator("article[data-id='rec-3'] button.flag").click()
    assert store.get("rec-3")["status"] == "model_rejected"
    assert _summary(page) == {"run": "run-a", "total": "3", "needs_review": "0", "approved": "1", "discarded": "1",
                              "model_rejected": "1"}
    page.select_option("select[name=status]", "needs_review")
    with page.expect_navigation():
        page.click("header button[type=submit] >> nth=0")
    assert [c.get_attribute("data-id") for c in page.locator("article.card").all()] == ["rec-4"]
    page.screenshot(path=str(SHOTS / "review-after.png"), full_page=True)


def test_a_stale_edit_shows_the_conflict(page_of):
    store, url, page = page_of
    page.goto(url)
    store.act("rec-1", "approve", 1, "ana", correction="ana's answer")  # someone else saves first
    card = page.locator("article[data-id='rec-1']")
    card.locator("textarea").fill("my answer")
    with page.expect_navigation():
        card.locator("button.approve").click()
    assert "Not saved" in page.locator("#notice").inner_text() and "changed by ana" in page.locator("#notice").inner_text()
    assert store.get("rec-1")["corrected_response"] == "ana's answer"


def test_a_page_beyond_loopback_needs_the_token(tmp_path):
    from fastapi.testclient import TestClient

    from tasks.ops.reviewpage import create_app

    client = TestClient(create_app(ReviewStore(f"sqlite:///{tmp_path / 'r.db'}"), "s3cret", hosts=None))
    assert client.get("/").status_code == 401 and client.get("/?token=wrong").status_code == 401
    assert client.get("/?token=s3cret").status_code == 200
    assert client.get("/").status_code == 200  # kept in a cookie after the first visit
    csrf = client.get("/").text.split('name="csrf" value="')[1].split('"')[0]
    moved = client.post("/reviewer", data={"reviewer": "ana", "back": "//evil.example/", "csrf": csrf},
                        follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == "/"  # never redirected off the page


def test_serve_binds_loopback_by_default():
    from typer.main import get_command

    from cli.main import app

    serve = get_command(app).commands["review"].commands["serve"]
    assert next(p for p in serve.params if p.name == "host").default == "127.0.0.1"


def test_a_long_queue_shows_the_worst_first_and_says_how_many_are_left(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from tasks.ops import reviewpage

    store = ReviewStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.add([SftCandidate(**_record(i, quality_score=i / 10)) for i in range(1, 6)], "importer")
    monkeypatch.setattr(reviewpage, "SHOWN", 2)
    html = TestClient(reviewpage.create_app(store), base_url="http://127.0.0.1").get("/").text
    assert "5 record(s), the first 2 shown" in " ".join(html.split())
    assert html.count('<article class="card"') == 2 and 'data-id="rec-1"' in html and 'data-id="rec-3"' not in html


# ---- the page accepts only its own forms (issue 25) --------------------------------------------------------------
def _client(tmp_path, token=None, hosts=("127.0.0.1", "localhost", "::1")):
    from fastapi.testclient import TestClient

    from tasks.ops.reviewpage import create_app

    store = ReviewStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.add([SftCandidate(**_record(i)) for i in (1, 2)], "importer")
    return store, TestClient(create_app(store, token, "tester", hosts), base_url="http://127.0.0.1:8765")


def _csrf(client, query="") -> str:
    return client.get("/" + query).text.split('name="csrf" value="')[1].split('"')[0]


def test_a_post_without_the_pages_csrf_token_is_refused(tmp_path):
    store, client = _client(tmp_path)
    approve = {"action": "approve", "version": "1", "correction": "injected", "back": "/"}
    for form in (approve, {**approve, "csrf": "guessed"}):  # what another site's page can send
        refused = client.post("/records/rec-1", data=form, follow_redirects=False)
        assert refused.status_code == 403 and "not from this page" in refused.text
    assert client.post("/reviewer", data={"reviewer": "mallory"}, follow_redirects=False).status_code == 403
    assert store.get("rec-1")["status"] == "needs_review" and store.get("rec-1")["corrected_response"] is None
    done = client.post("/records/rec-1", data={**approve, "correction": "right", "csrf": _csrf(client)},
                       follow_redirects=False)
    assert done.status_code == 303 and store.get("rec-1")["status"] == "approved"  # the page's own form works


def test_another_host_or_origin_is_refused(tmp_path):
    store, client = _client(tmp_path)
    rebound = client.get("/", headers={"host": "attacker.example:8765"})  # DNS rebinding to 127.0.0.1
    assert rebound.status_code == 403 and "answers only as" in rebound.text
    csrf = _csrf(client)
    form = {"action": "discard", "version": "1", "csrf": csrf}
    cross = client.post("/records/rec-2", data=form, headers={"origin": "https://evil.example"}, follow_redirects=False)
    assert cross.status_code == 403 and store.get("rec-2")["status"] == "needs_review"
    same = client.post("/records/rec-2", data=form, headers={"origin": "http://127.0.0.1:8765"}, follow_redirects=False)
    assert same.status_code == 303 and store.get("rec-2")["status"] == "discarded"
    assert client.get("/", headers={"host": "localhost:8765"}).status_code == 200


def test_a_reviewer_token_fixes_the_name(tmp_path):
    store, client = _client(tmp_path, {"tok-ana-123456": "ana", "tok-ben-123456": "ben"}, hosts=None)
    assert client.get("/?token=nope").status_code == 401
    csrf = _csrf(client, "?token=tok-ben-123456")
    assert client.post("/reviewer", data={"reviewer": "ana", "csrf": csrf}, follow_redirects=False).status_code == 400
    client.post("/records/rec-1", data={"action": "approve", "version": "1", "correction": "x", "csrf": csrf})
    assert store.get("rec-1")["updated_by"] == "ben"  # from the token, not a cookie


def test_imports_cannot_approve_and_ids_are_a_safe_alphabet(tmp_path):
    import json

    from typer.testing import CliRunner

    from cli.main import app

    db = f"sqlite:///{tmp_path / 'review.db'}"
    bad = tmp_path / "sft_candidates.jsonl"
    bad.write_text(json.dumps(_record(1, status="approved", corrected_response="mine")) + "\n"
                   + json.dumps(_record(2, id="a/../b")) + "\n" + json.dumps(_record(3, id="x y")) + "\n")
    result = CliRunner().invoke(app, ["review", "import", str(bad), "--db", db])
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and "3 problem(s), nothing imported" in out
    assert f"{bad}:1: status: 'approved': imported records enter as needs_review" in out
    assert f"{bad}:2: id: String should match pattern" in out and f"{bad}:3: id:" in out
    with pytest.raises(Exception, match="enter the store as needs_review"):
        ReviewStore(db).add([SftCandidate(**_record(4, status="approved"))], "x")
