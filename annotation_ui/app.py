"""The Gradio annotation app: both tasks and adjudication in one server, case images beside the
reports, keyboard shortcuts, admin progress.

Security model (why it looks the way it does):
* identity comes only from the session cookie, looked up in the study store on every request by
  `annotation_ui.server` (which Gradio sees as `gr.Request.username`); no handler takes a user
  name from the page or the API body, and every handler acts on that user's own queue;
* a reader sees only the tasks assigned to them (account `tasks`, or an assignments file), an
  adjudicator only adjudication, an admin only progress;
* case images are served by random per-reader tokens, never by path;
* the page sends back a single item reference that the server checks against the
  annotator's recorded queue before storing anything;
* all study text reaches the page through `views`, which escapes it;
* 127.0.0.1 unless told otherwise; any other address needs an annotators file; never a share link.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from annotation_ui import views  # noqa: E402
from annotation_ui.accounts import TASKS, Accounts  # noqa: E402
from annotation_ui.adjudication import PREFIX as ADJ  # noqa: E402
from annotation_ui.adjudication import AdjudicationService  # noqa: E402
from annotation_ui.persistence import CHOICES, MAX_COMMENT, AnnotationInputError, progress  # noqa: E402
from annotation_ui.queues import QueueConfig  # noqa: E402
from annotation_ui.server import AnnotationServer  # noqa: E402
from annotation_ui.service import AnnotationService, ItemView  # noqa: E402
from annotation_ui.sessions import Sessions  # noqa: E402
from annotation_ui.throttle import LoginThrottle  # noqa: E402
from steering.errors import RadsteerError  # noqa: E402
from steering.store import StudyStore, has_study  # noqa: E402

LOCAL_USER = "local"
"""The single annotator of an app served on loopback without an annotators file."""

QUESTIONS: dict[str, list[tuple[str, str, list[tuple[str, str, str]]]]] = {
    # field, question, [(value, shown text, key)]
    "change": [
        ("label", "The change from baseline to steered report is …", [
            ("on", "on-target", "1"), ("off", "off-target", "2"), ("both", "both", "3"), ("none", "none", "4")]),
        ("interpretation_valid", "The feature's interpretation (description) is valid", [
            ("yes", "yes", "q"), ("no", "no", "w"), ("unsure", "unsure", "e")]),
        ("coherent", "The steered report is still clinically coherent", [("yes", "yes", "a"), ("no", "no", "s")]),
    ],
    "feature": [
        ("validity", "The description matches the contexts", [
            ("valid", "valid", "1"), ("partly", "partly valid", "2"), ("invalid", "invalid", "3")]),
        ("clinically_relevant", "The feature is clinically relevant", [("yes", "yes", "q"), ("no", "no", "w")]),
    ],
}
assert all([v for v, _, _ in qs] == list(CHOICES[t][f]) for t in QUESTIONS for f, _, qs in QUESTIONS[t])

COMMON_KEYS: dict[str, tuple[str, str]] = {
    "f": ("toggle:rs-flag", "flag"),
    "c": ("focus:rs-comment", "comment (Ctrl+Enter submits, Esc leaves)"),
    "k": ("click:rs-skip", "skip"),
    "b": ("click:rs-back", "back"),
    "Enter": ("click:rs-submit", "submit"),
}


def keymap(task: str) -> dict[str, tuple[str, str]]:
    """Key → (action, description): one map for the page script and the on-screen legend."""
    out: dict[str, tuple[str, str]] = {}
    for fieldname, _q, choices in QUESTIONS[task]:
        for value, text, key in choices:
            out[key] = (f"set:rs-{fieldname}:{value}", f"{fieldname.replace('_', ' ')}: {text}")
    out.update(COMMON_KEYS)
    return out


IMAGE_KEYS = {"+": "zoom in", "-": "zoom out", "0": "reset image"}
MODES = {"change": "Change validation", "feature": "Feature validity", ADJ: "Adjudication"}


def _script() -> str:
    actions = {t: {k: a for k, (a, _d) in keymap(t).items()} for t in QUESTIONS}
    return """<script>
(() => {
  const ALL_KEYS = __KEYS__;
  const task = () => (document.querySelector('#rs-item') || {dataset: {}}).dataset.task || 'change';
  function act(a) {
    const [kind, id, val] = a.split(':');
    const root = document.getElementById(id);
    if (!root) return;
    if (kind === 'set') { const el = root.querySelector('input[type=radio][value="' + val + '"]'); if (el) el.click(); }
    else if (kind === 'click') { root.click(); }
    else if (kind === 'toggle') { const el = root.querySelector('input[type=checkbox]'); if (el) el.click(); }
    else if (kind === 'focus') { const el = root.querySelector('textarea, input'); if (el) el.focus(); }
  }
  document.addEventListener('keydown', (ev) => {
    const t = ev.target;
    const typing = t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && !['radio', 'checkbox'].includes(t.type)));
    if (typing) {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); t.blur(); setTimeout(() => act(KEYS['Enter']), 50); }
      else if (ev.key === 'Escape') { t.blur(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === 'Enter' && t && t.tagName === 'BUTTON') return;
    if (['+', '=', '-', '0'].includes(ev.key) && document.querySelector('.rs-viewer')) {
      ev.preventDefault();
      document.querySelectorAll('.rs-viewer').forEach(v => ev.key === '0' ? reset(v) : zoom(v, ev.key === '-' ? 1/1.25 : 1.25));
      return;
    }
    const KEYS = ALL_KEYS[task()] || {};
    const a = KEYS[ev.key] || KEYS[ev.key.toLowerCase()];
    if (!a) return;
    ev.preventDefault();
    act(a);
  });
  // ---- image viewers: zoom (wheel, +/-), pan (drag), window/level (sliders) ----
  const st = new WeakMap();
  function S(v) { if (!st.has(v)) st.set(v, {s: 1, x: 0, y: 0}); return st.get(v); }
  function apply(v) {
    const s = S(v), layer = v.querySelector('.rs-layer');
    if (layer) layer.style.transform = `translate(${s.x}px, ${s.y}px) scale(${s.s})`;
    const z = v.querySelector('.rs-zoom'); if (z) z.textContent = Math.round(s.s * 100) + '%';
  }
  function zoom(v, f, cx, cy) {
    const s = S(v), stage = v.querySelector('.rs-stage'), layer = v.querySelector('.rs-layer');
    if (!stage || !layer) return;
    const n = Math.min(16, Math.max(1, s.s * f));
    const r = layer.getBoundingClientRect();
    const px = cx === undefined ? r.left + r.width / 2 : cx, py = cy === undefined ? r.top + r.height / 2 : cy;
    const k = n / s.s;  // keep the point under the cursor fixed
    s.x += (px - r.left) * (1 - k); s.y += (py - r.top) * (1 - k); s.s = n;
    if (n === 1) { s.x = 0; s.y = 0; }
    apply(v);
  }
  function windowing(v) {
    const lv = +v.querySelector('[data-wl=level]').value / 255, w = +v.querySelector('[data-wl=window]').value / 255;
    const f = document.getElementById(v.dataset.filter);
    if (!f) return;
    f.querySelectorAll('feFuncR, feFuncG, feFuncB').forEach(e => {
      e.setAttribute('slope', (1 / w).toFixed(4)); e.setAttribute('intercept', (0.5 - lv / w).toFixed(4)); });
    v.dataset.level = Math.round(lv * 255); v.dataset.window = Math.round(w * 255);
  }
  function reset(v) {
    const s = S(v); s.s = 1; s.x = 0; s.y = 0; apply(v);
    v.querySelector('[data-wl=level]').value = 128; v.querySelector('[data-wl=window]').value = 255; windowing(v);
  }
  document.addEventListener('wheel', (ev) => {
    const v = ev.target.closest && ev.target.closest('.rs-stage') && ev.target.closest('.rs-viewer');
    if (!v) return;
    ev.preventDefault();
    zoom(v, ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY);
  }, {passive: false});
  document.addEventListener('click', (ev) => {
    const b = ev.target.closest && ev.target.closest('.rs-tools button');
    if (!b) return;
    const v = b.closest('.rs-viewer');
    if (b.dataset.act === 'reset') reset(v); else zoom(v, b.dataset.act === 'in' ? 1.25 : 1 / 1.25);
  });
  document.addEventListener('input', (ev) => {
    if (ev.target.dataset && ev.target.dataset.wl) windowing(ev.target.closest('.rs-viewer'));
  });
  let drag = null;
  document.addEventListener('pointerdown', (ev) => {
    const stage = ev.target.closest && ev.target.closest('.rs-stage');
    if (!stage || ev.button !== 0) return;
    const v = stage.closest('.rs-viewer'), s = S(v);
    drag = {v, x0: ev.clientX - s.x, y0: ev.clientY - s.y};
    ev.preventDefault();
  });
  document.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const s = S(drag.v); s.x = ev.clientX - drag.x0; s.y = ev.clientY - drag.y0; apply(drag.v);
  });
  document.addEventListener('pointerup', () => { drag = null; });
  // grounded reports: hovering a box or a legend line highlights that sentence's boxes and line;
  // the sentences with boxes are underlined in their report's text (CSS highlights, no markup added)
  document.addEventListener('mouseover', (ev) => {
    const hit = ev.target.closest && ev.target.closest('[data-rs-box]');
    const tag = hit ? hit.dataset.rsBox : null, v = hit && hit.closest('.rs-viewer');
    document.querySelectorAll('.rs-hl').forEach(e => { if (!v || e.dataset.rsBox !== tag) e.classList.remove('rs-hl'); });
    if (v) v.querySelectorAll('[data-rs-box]').forEach(e => { if (e.dataset.rsBox === tag) e.classList.add('rs-hl'); });
    groundMarks();
  });
  const norm = (t) => t.replace(/\\s+/g, ' ').replace(/ ([.,;:])/g, '$1').trim();
  function rangeOf(root, phrase) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT), nodes = [];
    let text = '';
    while (walker.nextNode()) { nodes.push([walker.currentNode, text.length]); text += walker.currentNode.data; }
    const i = phrase ? text.indexOf(phrase) : -1;
    if (i < 0) return null;
    const at = (k) => { for (let j = nodes.length - 1; j >= 0; j--) if (nodes[j][1] <= k) return [nodes[j][0], k - nodes[j][1]]; };
    const r = new Range(), a = at(i), b = at(i + phrase.length);
    r.setStart(a[0], a[1]); r.setEnd(b[0], Math.min(b[1], b[0].data.length));
    return r;
  }
  function groundMarks() {
    if (!(window.CSS && CSS.highlights && window.Highlight)) return;
    const marks = {B: [], S: [], hl: []};
    document.querySelectorAll('#rs-grounding li[data-rs-box]').forEach(li => {
      const tag = li.dataset.rsBox, t = li.querySelector('.rs-gt');
      const root = document.getElementById(tag[0] === 'B' ? 'rs-baseline' : 'rs-steered');
      const r = root && t ? rangeOf(root, norm(t.textContent)) : null;
      if (!r) return;
      marks[tag[0]].push(r);
      if (li.classList.contains('rs-hl')) marks.hl.push(r);
    });
    CSS.highlights.set('rs-g-b', new Highlight(...marks.B));
    CSS.highlights.set('rs-g-s', new Highlight(...marks.S));
    CSS.highlights.set('rs-g-hl', new Highlight(...marks.hl));
  }
  let marking = false;
  new MutationObserver(() => { if (!marking) { marking = true; requestAnimationFrame(() => { marking = false; groundMarks(); }); } })
    .observe(document.documentElement, {childList: true, subtree: true, characterData: true});
  document.addEventListener('dblclick', (ev) => {
    const v = ev.target.closest && ev.target.closest('.rs-stage') && ev.target.closest('.rs-viewer');
    if (v) reset(v);
  });
})();
</script>""".replace("__KEYS__", json.dumps(actions))


def _text(value: Any) -> str:
    """A raw text input of the reader's loop (no Gradio preprocessing): anything but text is ''."""
    return value if isinstance(value, str) else ""


def refuse(message: str) -> gr.Error:
    """A refusal shown to the user (page toast / API error); not a server fault, so no traceback."""
    return gr.Error(message, print_exception=False)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serving(host: str, accounts: Accounts | None) -> None:
    """Refuse to serve beyond this machine without logins."""
    if not is_loopback(host) and (accounts is None or not len(accounts)):
        raise RadsteerError(
            f"--host {host}: refusing to serve beyond localhost without authentication; add annotators "
            "with `radsteer annotate RUN_DIR --add-user NAME` and pass --annotators FILE (or use --host 127.0.0.1)"
        )


def read_assignments(path: str | Path) -> dict[str, tuple[str, ...]]:
    """An assignments file: JSON `{"alice": ["change"], "bob": ["change", "feature"]}`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RadsteerError(f"--assignments {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise RadsteerError(f"--assignments {path}: expected an object {{annotator: [tasks]}}")
    out: dict[str, tuple[str, ...]] = {}
    for name, tasks in raw.items():
        if not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks):
            raise RadsteerError(f"--assignments {path}: field {name!r} must be a non-empty list of "
                                f"{' / '.join(TASKS)}, not {tasks!r}")
        out[str(name)] = tuple(t for t in TASKS if t in tasks)
    return out


class AnnotationApp:
    """The Blocks app of one study: its tasks, adjudication and admin progress. `launch()` serves it."""

    def __init__(self, store: StudyStore, tasks: str | tuple[str, ...] | list[str] = TASKS, *,
                 accounts: Accounts | None = None, config: QueueConfig | None = None, show_automated: bool = False,
                 assignments: dict[str, tuple[str, ...]] | None = None,
                 throttle: LoginThrottle | None = None) -> None:
        self.store = store
        self.tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        for t in self.tasks:
            if t not in TASKS:
                raise AnnotationInputError(f"--task {t!r}: expected one of {', '.join(TASKS)}")
        self.accounts = accounts if accounts is not None and len(accounts) else None
        self.assignments = dict(assignments or {})
        self.services = {
            t: AnnotationService(store, t, config or QueueConfig(), self._annotators(t), show_automated=show_automated)
            for t in self.tasks
        }
        self.adjudication = AdjudicationService(store, self.services)
        self.sessions = Sessions(store, self.accounts) if self.accounts is not None else None
        self.throttle = throttle
        self.blocks = self._build()
        self.server: AnnotationServer | None = None

    @property
    def task(self) -> str:
        """The first task (kept for callers of the one-task app)."""
        return self.tasks[0]

    def _annotators(self, task: str) -> list[str]:
        if self.accounts is None:
            return [LOCAL_USER]
        return [n for n in self.accounts.annotators() if task in self.modes_of(n)]

    # ---- identity -------------------------------------------------------------------------

    def user(self, request: gr.Request | None) -> str:
        """The logged-in user of this request (our session cookie), or the local user."""
        if self.accounts is None:
            return LOCAL_USER
        name = getattr(request, "username", None)
        if not name or self.accounts.get(name) is None:
            raise refuse("You are not logged in (or your account was removed); reload the page and log in.")
        return name

    def modes_of(self, name: str) -> list[str]:
        """What `name` may open: their assigned tasks, "adj" for adjudicators, nothing for admins."""
        if self.accounts is None:
            return list(self.tasks)
        role = self.accounts.role(name)
        if role == "adjudicator":
            return [ADJ]
        if role != "annotator":
            return []
        assigned = self.assignments.get(name) or self.accounts.tasks_of(name)
        return [t for t in self.tasks if t in assigned]

    def is_admin(self, name: str) -> bool:
        return self.accounts is None or self.accounts.is_admin(name)

    def _service(self, name: str, mode: str) -> Any:
        if mode not in self.modes_of(name):
            if mode not in (*self.tasks, ADJ):
                raise refuse(f"task {str(mode)[:40]!r}: not a task of this server; reload the page")
            raise refuse(f"'{name}' is not assigned the {MODES.get(mode, mode)} task.")
        return self.adjudication if mode == ADJ else self.services[mode]

    # ---- handlers (each one acts on the caller's own identity) ------------------------------

    def _outputs(self, name: str, mode: str, view: ItemView, *, first: bool = False) -> list[Any]:
        """The page's outputs. Only the first (page load) carries a property update (the reader's
        own task choices): Gradio rebuilds a component for every update, which costs more than the
        rest of a call; the question groups are shown and hidden by CSS from `#rs-item`'s task."""
        modes = self.modes_of(name)
        images = []
        for im in view.images:
            token = self.server.images.issue(name, im.path) if self.server is not None else ""
            images.append((im.view, im.label, f"rs/image/{token}"))
        header = (f'<div id="rs-item" data-task="{views.esc(view.task)}" data-mode="{views.esc(mode)}" '
                  f'data-finished="{int(view.finished)}">{view.header}</div>')
        vals: list[Any] = [
            view.ref,
            gr.update(choices=[(MODES[m], m) for m in modes], value=mode if mode in modes else None,
                      visible=len(modes) > 1) if first else (mode if mode in modes else None),
            view.progress, header, views.images_html(images, view.grounding), *self._sides(view), view.readers,
        ]
        for task in QUESTIONS:
            vals += [view.answers.get(f) if view.task == task else None for f, _q, _c in QUESTIONS[task]]
        vals += [view.answers.get("comment", ""), bool(view.answers.get("flagged", False))]
        status = view.message
        if view.answers.get("skipped"):
            status = (status + " " if status else "") + "You skipped this item earlier."
        vals.append(f'<div id="rs-status-text">{views.esc(status)}</div>')
        vals.append(views.keys_html({**keymap(view.task), **{k: ("", v) for k, v in IMAGE_KEYS.items()}}
                                    if view.images else keymap(view.task)))
        return vals

    @staticmethod
    def _sides(view: ItemView) -> tuple[str, str]:
        if view.finished:
            return "", ""
        if view.task == "change":
            return ('<div class="rs-side-title">Baseline report</div>' + view.left,
                    '<div class="rs-side-title">Steered report (changes highlighted)</div>' + view.right)
        return '<div class="rs-side-title">Top-activating contexts (darker = stronger)</div>' + view.left, ""

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except AnnotationInputError as exc:
            raise refuse(str(exc)) from None

    def _mode_of_ref(self, ref: str) -> str:
        head = _text(ref).split(":", 1)[0]
        if head not in (*self.tasks, ADJ):
            raise refuse(f"item reference {str(ref)[:60]!r} is not an item of this app; reload the page")
        return head

    def on_load(self, request: gr.Request):
        name = self.user(request)
        admin = self.is_admin(name)
        who = f'<div id="rs-user">Logged in as <b>{views.esc(name)}</b>' + (
            ' · <a href="logout">log out</a>' if self.accounts else "") + "</div>"
        modes = self.modes_of(name)
        if not modes:
            msg = ("Admin account: no queue. Progress per annotator is below." if admin else
                   "No task of this server is assigned to you; ask the study coordinator.")
            view = ItemView(self.tasks[0], "", None, 0, 0, header=f'<div class="rs-head">{views.esc(msg)}</div>',
                            finished=True)
            out = self._outputs(name, "", view, first=True)
        else:
            mode = self._first_open(name, modes)
            out = self._outputs(name, mode, self._guard(self._service(name, mode).current, name), first=True)
        admin_table = self._progress_table() if admin else ""
        return [*out, who, gr.update(visible=admin), admin_table]

    def _first_open(self, name: str, modes: list[str]) -> str:
        """The first task with items left (so a reader lands where there is work)."""
        for m in modes:
            if m != ADJ and not self.services[m].current(name).finished:
                return m
        return modes[0]

    def on_switch(self, mode: str, request: gr.Request):
        """The caller's current item of task `mode` ("change", "feature" or "adj")."""
        name = self.user(request)
        mode = _text(mode)
        return self._outputs(name, mode, self._guard(self._service(name, mode).current, name))

    def on_submit(self, ref: str, label: str, interpretation_valid: str, coherent: str, validity: str,
                  clinically_relevant: str, comment: str, flagged: bool, request: gr.Request):
        name = self.user(request)
        ref = _text(ref)
        mode = self._mode_of_ref(ref)
        svc = self._service(name, mode)
        raw: dict[str, Any] = dict(label=label, interpretation_valid=interpretation_valid, coherent=coherent,
                                   validity=validity, clinically_relevant=clinically_relevant,
                                   comment=comment, flagged=flagged)
        task = ref.split(":")[1] if mode == ADJ else mode
        raw = {k: v for k, v in raw.items() if k in CHOICES.get(task, {}) or k in ("comment", "flagged")}
        return self._outputs(name, mode, self._guard(svc.submit, name, ref, raw))

    def on_skip(self, ref: str, request: gr.Request):
        name = self.user(request)
        ref = _text(ref)
        mode = self._mode_of_ref(ref)
        return self._outputs(name, mode, self._guard(self._service(name, mode).skip, name, ref))

    def on_back(self, ref: str, request: gr.Request):
        name = self.user(request)
        ref = _text(ref)
        mode = self._mode_of_ref(ref)
        return self._outputs(name, mode, self._guard(self._service(name, mode).back, name, ref))

    def on_progress(self, request: gr.Request) -> str:
        if not self.is_admin(self.user(request)):
            raise refuse("Only admin accounts can see everyone's progress.")
        return self._progress_table()

    def _progress_table(self) -> str:
        cols = ["annotator", "assigned", "done", "skipped", "flagged", "remaining", "median_seconds"]
        head = "<th>task</th>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
        body = "".join(
            f"<tr><td>{views.esc(task)}</td>" + "".join(f"<td>{views.esc(str(r[c]))}</td>" for c in cols) + "</tr>"
            for task in self.tasks for r in progress(self.store, task))
        adj = self.store.adjudications()
        return (f'<table id="rs-admin-table"><tr>{head}</tr>{body}</table>'
                f'<div class="rs-muted">Final answers recorded by adjudicators: {len(adj)}</div>')

    # ---- layout ---------------------------------------------------------------------------

    def _build(self) -> gr.Blocks:
        with gr.Blocks(title="radsteer · reader study", analytics_enabled=False) as demo:
            with gr.Row():
                gr.HTML("<h2 style='margin:0'>radsteer reader study</h2>")
                who = gr.HTML()
            # every mode of this server (Gradio checks values against these); each user sees their own
            mode = gr.Radio(choices=[(MODES[t], t) for t in (*self.tasks, ADJ)], label="Task", elem_id="rs-task",
                            visible=len(self.tasks) > 1)
            mode_text = gr.Textbox(visible=False)  # the API's free-text task: validated here, not by Gradio
            ref = gr.Textbox(visible=False, elem_id="rs-ref")
            prog = gr.HTML(elem_id="rs-progress-box")
            header = gr.HTML(elem_id="rs-header")
            with gr.Row(elem_id="rs-main"):
                with gr.Column(elem_id="rs-images-col", scale=3):
                    images = gr.HTML(elem_id="rs-images")
                with gr.Column(elem_id="rs-text-col", scale=2):
                    with gr.Row(equal_height=True):
                        left = gr.HTML(elem_id="rs-left")
                        right = gr.HTML(elem_id="rs-right")
                    readers = gr.HTML(elem_id="rs-readers-box")
                    radios = []
                    for task in QUESTIONS:
                        with gr.Column(elem_id=f"rs-q-{task}", elem_classes=["rs-q"]):
                            for fieldname, question, choices in QUESTIONS[task]:
                                radios.append(gr.Radio(
                                    choices=[(f"{text} [{key}]", value) for value, text, key in choices],
                                    label=question, elem_id=f"rs-{fieldname}"))
                    comment = gr.Textbox(label="Comment [c]", lines=2, max_length=MAX_COMMENT, elem_id="rs-comment")
                    flagged = gr.Checkbox(label="Flag this item for discussion [f]", elem_id="rs-flag")
                    with gr.Row():
                        back = gr.Button("← Back [b]", elem_id="rs-back")
                        skip = gr.Button("Skip [k]", elem_id="rs-skip")
                        submit = gr.Button("Submit [Enter]", variant="primary", elem_id="rs-submit")
                    status = gr.HTML(elem_id="rs-status")
                    legend = gr.HTML(elem_id="rs-legend")
            with gr.Column(visible=False) as admin_col:
                gr.HTML("<h3>Progress per annotator</h3>")
                admin_table = gr.HTML(elem_id="rs-admin")
                refresh = gr.Button("Refresh progress", elem_id="rs-refresh")

            outs = [ref, mode, prog, header, images, left, right, readers, *radios, comment, flagged, status,
                    legend]
            opts = dict(queue=False, concurrency_limit=None)
            # The reader's loop: Gradio's per-component pre/postprocessing is an identity for these
            # components (text, radio values, a bool) but costs a thread hand-off per component and
            # call (~25 per submit), which under ten concurrent readers is most of a call's latency
            # (benchmarks/annotation.py). The handlers take raw values and check every one themselves
            # (`_text`, `validate_answers`); they return exactly what the components display.
            loop = dict(opts, preprocess=False, postprocess=False)
            demo.load(self.on_load, None, [*outs, who, admin_col, admin_table], api_visibility="private", **opts)
            mode.input(self.on_switch, [mode], outs, api_visibility="private", **loop)
            gr.Button(visible=False).click(self.on_switch, [mode_text], outs, api_name="next_item", **loop)
            submit.click(self.on_submit, [ref, *radios, comment, flagged], outs, api_name="submit", **loop)
            skip.click(self.on_skip, [ref], outs, api_name="skip", **loop)
            back.click(self.on_back, [ref], outs, api_name="back", **loop)
            refresh.click(self.on_progress, None, [admin_table], api_name="progress", **opts)
        return demo

    def launch(self, host: str = "127.0.0.1", port: int | None = None, *, block: bool = True,
               quiet: bool = False) -> tuple[Any, str]:
        """Serve on `host:port`; returns (FastAPI app, local URL). Never creates a share link."""
        check_serving(host, self.accounts)
        self.server = AnnotationServer(
            self.blocks, self.accounts, self.sessions, local_user=LOCAL_USER, title="radsteer reader study",
            auth_message="Log in with the user name and password your study coordinator gave you.",
            css=views.CSS + views.LAYOUT_CSS + views.GROUNDING_CSS, head=_script(), throttle=self.throttle)
        url = self.server.serve(host, port if port is not None else _free_port(host), block=block, quiet=quiet)
        return self.server.app, url

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _free_port(host: str, start: int = 7860) -> int:
    import socket

    for port in range(start, start + 100):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RadsteerError(f"no free port in {start}-{start + 99} on {host}; pass --port")


def open_app(run_dir: str | Path, tasks: str | tuple[str, ...] = TASKS, *, annotators: str | Path | None = None,
             overlap: float = 0.2, seed: int = 0, disagreements_first: bool = True,
             show_automated: bool = False, assignments: str | Path | None = None) -> AnnotationApp:
    """The app of the study in `run_dir` (annotators file: given, or RUN_DIR/annotators.json if present)."""
    run_dir = Path(run_dir)
    if not has_study(run_dir):
        raise RadsteerError(f"{run_dir}: no study.sqlite here; run `radsteer sweep` first or check the path")
    path = Path(annotators) if annotators else run_dir / "annotators.json"
    if annotators and not path.exists():
        raise RadsteerError(f"--annotators {path}: file not found; create it with --add-user NAME")
    accounts = Accounts(path) if path.exists() else None
    assigned = read_assignments(assignments) if assignments else None
    if assigned and accounts is not None:
        unknown = sorted(set(assigned) - set(accounts.users))
        if unknown:
            raise RadsteerError(f"--assignments {assignments}: {', '.join(map(repr, unknown))} not in {path}")
    store = StudyStore.open(run_dir)
    config = QueueConfig(overlap=overlap, seed=seed, disagreements_first=disagreements_first)
    return AnnotationApp(store, tasks, accounts=accounts, config=config, show_automated=show_automated,
                         assignments=assigned)
