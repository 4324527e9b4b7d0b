"""The review page (`curate review serve`): a queue of failure cards from the review store, each with the prompt
messages, the model's response, the failure reason, the quality score (red < 0.4, orange < 0.7, yellow otherwise)
and chips for model and task type; actions write a correction (approve), discard, or flag the model; filters by
status, task type and benchmark run; a per-run summary. Keyboard: j/k move between cards, c edits the correction,
a approves, d discards, f flags. Every text is escaped (responses are untrusted model output).

The page accepts only its own forms: every form carries a CSRF token (random per server start) that a POST must
return; a request whose Host is not one the page is served as (loopback names when bound to loopback: a DNS-rebinding
page is refused), or a POST whose Origin is another site, gets 403. Bound to 127.0.0.1 by default, where the
reviewer's name is self-asserted (a cookie set with the form in the header). Elsewhere a token is required
(?token=..., then kept in a cookie); with per-reviewer tokens (NAME=TOKEN) the name comes from the token and cannot
be changed on the page."""

import secrets
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from jinja2 import Environment

from tasks.backends.reviewstore import ACTIONS, Conflict, ReviewStore
from tasks.core.sftrecords import STATUSES
from tasks.errors import WorkbenchError

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Review failures — curation-workbench</title>
<style>
 body { font: 14px/1.45 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
 header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 18px; align-items: center; }
 header h1 { font-size: 17px; margin: 0; } header form { display: flex; gap: 8px; align-items: center; }
 main { display: grid; grid-template-columns: minmax(0, 1fr) 440px; gap: 18px; padding: 18px 20px; }
 aside { overflow-x: auto; } th { font-weight: 600; }
 .card { background: #fff; border: 2px solid transparent; border-radius: 8px; padding: 12px 16px; margin-bottom: 14px;
         box-shadow: 0 1px 2px #0002; } .card.focus { border-color: #3b6fd8; }
 .meta { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin-bottom: 8px; }
 .chip { background: #e8ecf5; border-radius: 10px; padding: 1px 9px; font-size: 12px; }
 .score { border-radius: 10px; padding: 1px 9px; font-weight: 600; font-size: 12px; }
 .red { background: #f8c9c9; color: #8a1010; } .orange { background: #fbd9b0; color: #8a4b00; }
 .yellow { background: #fbf0b0; color: #6b5a00; } .status { margin-left: auto; font-size: 12px; color: #555; }
 pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f9; padding: 6px 9px; border-radius: 5px;
       margin: 3px 0 8px; font: 13px/1.4 ui-monospace, monospace; } .role { font-size: 12px; color: #666; }
 .reason { color: #8a1010; } textarea { width: 100%; min-height: 54px; font: 13px ui-monospace, monospace; }
 .actions { display: flex; gap: 8px; margin-top: 6px; } button { padding: 4px 10px; cursor: pointer; }
 .notice { background: #fff3cd; border: 1px solid #e0c36a; padding: 8px 12px; border-radius: 6px; margin-bottom: 12px; }
 table { border-collapse: collapse; width: 100%; background: #fff; } td, th { border: 1px solid #ddd; padding: 3px 6px; font-size: 12px; }
 kbd { background: #eee; border-radius: 3px; padding: 0 4px; font-size: 11px; }
</style></head><body>
<header><h1>Review failures</h1>
<form method="get" action="/">
 <select name="status" aria-label="status"><option value="">any status</option>
 {% for s in statuses %}<option value="{{ s }}" {{ 'selected' if s == filters.status }}>{{ s }}</option>{% endfor %}</select>
 <select name="task" aria-label="task type"><option value="">any task</option>
 {% for t in tasks %}<option value="{{ t }}" {{ 'selected' if t == filters.task }}>{{ t }}</option>{% endfor %}</select>
 <select name="run" aria-label="benchmark run"><option value="">any run</option>
 {% for r in runs %}<option value="{{ r }}" {{ 'selected' if r == filters.run }}>{{ r[:12] }}</option>{% endfor %}</select>
 <button type="submit">Filter</button></form>
{% if fixed_reviewer %}<span>reviewer {{ reviewer }}</span>{% else %}
<form method="post" action="/reviewer"><label>reviewer <input name="reviewer" value="{{ reviewer }}" size="10"></label>
 <input type="hidden" name="back" value="{{ back }}"><input type="hidden" name="csrf" value="{{ csrf }}">
 <button type="submit">Set</button></form>{% endif %}
</header>
<main><section id="queue">
{% if notice %}<div class="notice" id="notice">{{ notice }}</div>{% endif %}
<p>{{ total }} record(s){% if total > records|length %}, the first {{ records|length }} shown (filter, or finish
these, to see the rest){% endif %}. Keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous, <kbd>c</kbd> write correction,
<kbd>a</kbd> approve, <kbd>d</kbd> discard, <kbd>f</kbd> flag model.</p>
{% for r in records %}
<article class="card" id="card-{{ loop.index0 }}" data-id="{{ r.id }}" tabindex="-1">
 <div class="meta"><span class="score {{ colour(r.quality_score) }}" title="quality score">{{ '%.2f' % r.quality_score }}</span>
  <span class="chip">{{ r.model_name }}</span><span class="chip">{{ r.task_type }}</span>
  <span class="chip">{{ r.task_name }} · {{ r.task_id }}</span>
  <span class="status">{{ r.status }} · v{{ r.version }}{% if r.updated_by %} · {{ r.updated_by }}{% endif %}</span></div>
 {% for m in r.prompt_messages %}<div class="role">{{ m.role }}</div><pre class="prompt">{{ m.content }}</pre>{% endfor %}
 <div class="role">model response</div><pre class="response">{{ r.model_response }}</pre>
 <div class="reason">{{ r.failure_reason }}</div>
 <form method="post" action="/records/{{ r.id | urlencode }}">
  <input type="hidden" name="version" value="{{ r.version }}"><input type="hidden" name="back" value="{{ back }}">
  <input type="hidden" name="csrf" value="{{ csrf }}">
  <textarea name="correction" aria-label="correction" placeholder="the right answer">{{ r.corrected_response or '' }}</textarea>
  <div class="actions"><button name="action" value="approve" class="approve">Approve with correction</button>
  <button name="action" value="discard" class="discard">Discard</button>
  <button name="action" value="flag" class="flag">Flag model</button></div></form>
</article>
{% endfor %}
</section>
<aside><h3>By benchmark run</h3><table id="summary"><tr><th>run</th><th>total</th>
{% for s in statuses %}<th>{{ s.replace('_', ' ') }}</th>{% endfor %}</tr>
{% for row in summary %}<tr><td title="{{ row.benchmark_run_id }}">{{ row.benchmark_run_id[:8] }}</td><td>{{ row.total }}</td>
{% for s in statuses %}<td class="{{ s }}">{{ row[s] }}</td>{% endfor %}</tr>{% endfor %}</table></aside></main>
<script>
let i = 0; const cards = [...document.querySelectorAll('.card')];
function show(k) { if (!cards.length) return; i = Math.max(0, Math.min(cards.length - 1, k));
  cards.forEach(c => c.classList.remove('focus')); cards[i].classList.add('focus'); cards[i].scrollIntoView({block: 'nearest'}); }
document.addEventListener('keydown', e => {
  if (e.target.tagName === 'TEXTAREA' || e.target.tagName === 'INPUT') { if (e.key === 'Escape') e.target.blur(); return; }
  const card = cards[i]; const press = cls => card && card.querySelector('button.' + cls).click();
  if (e.key === 'j') show(i + 1); else if (e.key === 'k') show(i - 1);
  else if (e.key === 'c' && card) { e.preventDefault(); card.querySelector('textarea').focus(); }
  else if (e.key === 'a') press('approve'); else if (e.key === 'd') press('discard'); else if (e.key === 'f') press('flag');
});
show(0);
</script></body></html>"""

ENV = Environment(autoescape=True)
SHOWN = 200  # cards per page: a store can hold thousands of failures, and the worst come first
TEMPLATE = ENV.from_string(PAGE)


def colour(score: float) -> str:
    return "red" if score < 0.4 else "orange" if score < 0.7 else "yellow"


def local(path: str) -> str:
    """A redirect target on this page only ('//host/...' would leave it)."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def host_of(value: str) -> str:
    """'127.0.0.1:8765' / '[::1]:8765' / 'http://localhost:8765' -> the host name alone."""
    return (urlsplit(value if "//" in value else f"//{value}").hostname or "").lower()


def _guard(app: FastAPI, token, names: dict[str, str], hosts: "tuple[str, ...] | None") -> None:
    """Before every request: the Host it was sent to, a form posted from another site, and the token (in the query,
    then kept in a cookie)."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if hosts is not None and host_of(request.headers.get("host", "")) not in hosts:
            return PlainTextResponse(f"this page answers only as {', '.join(hosts)}", 403)
        origin = request.headers.get("origin")
        if request.method == "POST" and origin and host_of(origin) != host_of(request.headers.get("host", "")):
            return PlainTextResponse("a form from another site is not accepted here", 403)
        if token is None:
            return await call_next(request)
        given = request.query_params.get("token") or request.cookies.get("curate_review_token") or ""
        valid = given in names if names else secrets.compare_digest(given, token)
        if not given or not valid:
            return PlainTextResponse("a token is required: open the address `curate review serve` printed", 401)
        response = await call_next(request)
        response.set_cookie("curate_review_token", given, httponly=True, samesite="strict")
        return response


def create_app(store: ReviewStore, token: "str | dict[str, str] | None" = None, reviewer: str = "reviewer",
               hosts: "tuple[str, ...] | None" = LOOPBACK) -> FastAPI:
    """token: one shared token, {token: reviewer name} (identity bound to the token), or None (loopback only).
    hosts: the host names the page answers as (None: any, for a page behind a proxy that sets Host)."""
    app = FastAPI(title="curation-workbench review", docs_url=None, redoc_url=None, openapi_url=None)
    csrf = secrets.token_urlsafe(24)
    names = token if isinstance(token, dict) else {}

    def who(request: Request) -> str:
        given = request.query_params.get("token") or request.cookies.get("curate_review_token") or ""
        return names.get(given) or request.cookies.get("curate_reviewer", reviewer)

    _guard(app, token, names, hosts)

    def checked(form_token: str) -> PlainTextResponse | None:
        if not secrets.compare_digest(form_token, csrf):
            return PlainTextResponse("this form is not from this page (or the page was served before a restart): "
                                     "reload it and try again", 403)
        return None

    @app.get("/", response_class=HTMLResponse)
    def queue(request: Request, status: str = "", task: str = "", run: str = "", notice: str = ""):
        everything = store.records()
        filters = {"status": status, "task": task, "run": run}
        back = "/?" + urlencode({k: v for k, v in filters.items() if v})
        records = store.records(status or None, task or None, run or None)
        return TEMPLATE.render(records=records[:SHOWN], total=len(records), filters=filters,
                               statuses=STATUSES, tasks=sorted({r["task_type"] for r in everything}),
                               runs=sorted({r["benchmark_run_id"] for r in everything}), summary=store.summary(),
                               notice=notice, back=back, colour=colour, csrf=csrf, reviewer=who(request),
                               fixed_reviewer=bool(names))

    @app.post("/records/{record_id}")
    def act(request: Request, record_id: str, action: str = Form(...), version: int = Form(...),
            correction: str = Form(""), back: str = Form("/"), form_csrf: str = Form("", alias="csrf")):
        if (refused := checked(form_csrf)) is not None:
            return refused
        if action not in ACTIONS:
            return PlainTextResponse(f"unknown action '{action}'", 400)
        try:
            store.act(record_id, action, version, who(request), correction or None)
            notice = ""
        except (Conflict, WorkbenchError) as err:
            notice = f"Not saved: {err}"
        target = local(back)
        sep = "&" if "?" in target else "?"
        return RedirectResponse(target + (f"{sep}{urlencode({'notice': notice})}" if notice else ""), 303)

    @app.post("/reviewer")
    def set_reviewer(reviewer_name: str = Form(..., alias="reviewer"), back: str = Form("/"),
                     form_csrf: str = Form("", alias="csrf")):
        if (refused := checked(form_csrf)) is not None:
            return refused
        if names:
            return PlainTextResponse("the reviewer's name comes from their token here", 400)
        response = RedirectResponse(local(back), 303)
        response.set_cookie("curate_reviewer", reviewer_name.strip()[:80] or reviewer, samesite="strict")
        return response

    return app
