"""The Gradio annotation app: login, one task per server, keyboard shortcuts, admin progress.

Security model (why it looks the way it does):
* identity comes only from Gradio's login cookie (`gr.Request.username`); no handler takes a
  user name from the page or the API body, and every handler acts on that user's own queue;
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
from annotation_ui.accounts import Accounts  # noqa: E402
from annotation_ui.persistence import CHOICES, MAX_COMMENT, AnnotationInputError, progress  # noqa: E402
from annotation_ui.queues import QueueConfig  # noqa: E402
from annotation_ui.service import AnnotationService, ItemView  # noqa: E402
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


def _script(task: str) -> str:
    actions = {k: a for k, (a, _d) in keymap(task).items()}
    return """<script>
(() => {
  const KEYS = __KEYS__;
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
    const a = KEYS[ev.key] || KEYS[ev.key.toLowerCase()];
    if (!a) return;
    ev.preventDefault();
    act(a);
  });
})();
</script>""".replace("__KEYS__", json.dumps(actions))


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


class AnnotationApp:
    """The Blocks app of one study and one task. `launch()` serves it."""

    def __init__(self, store: StudyStore, task: str = "change", *, accounts: Accounts | None = None,
                 config: QueueConfig | None = None, show_automated: bool = False) -> None:
        self.store, self.task = store, task
        self.accounts = accounts if accounts is not None and len(accounts) else None
        annotators = self.accounts.annotators() if self.accounts else [LOCAL_USER]
        self.service = AnnotationService(store, task, config or QueueConfig(), annotators,
                                         show_automated=show_automated)
        self.blocks = self._build()

    # ---- identity -------------------------------------------------------------------------

    def user(self, request: gr.Request | None) -> str:
        """The logged-in user of this request (Gradio's session cookie), or the local user."""
        if self.accounts is None:
            return LOCAL_USER
        name = getattr(request, "username", None)
        if not name or name not in self.accounts:
            raise refuse("You are not logged in (or your account was removed); reload the page and log in.")
        return name

    def annotator(self, request: gr.Request | None) -> str:
        name = self.user(request)
        if self.accounts is not None and self.accounts.is_admin(name):
            raise refuse(f"'{name}' is an admin account: it has no queue. See the progress table below.")
        return name

    def is_admin(self, name: str) -> bool:
        return self.accounts is None or self.accounts.is_admin(name)

    # ---- handlers (each one acts on the caller's own identity) ------------------------------

    def _outputs(self, view: ItemView) -> list[Any]:
        vals = [view.ref, view.progress, view.header, view.left]
        if self.task == "change":
            vals.append(view.right)
        vals += [view.answers.get(f) for f, _q, _c in QUESTIONS[self.task]]
        vals += [view.answers.get("comment", ""), bool(view.answers.get("flagged", False))]
        status = view.message
        if view.answers.get("skipped"):
            status = (status + " " if status else "") + "You skipped this item earlier."
        vals.append(f'<div id="rs-status-text">{views.esc(status)}</div>')
        return vals

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except AnnotationInputError as exc:
            raise refuse(str(exc)) from None

    def on_load(self, request: gr.Request):
        name = self.user(request)
        admin = self.is_admin(name)
        who = f'<div id="rs-user">Logged in as <b>{views.esc(name)}</b>' + (
            ' · <a href="/logout">log out</a>' if self.accounts else "") + "</div>"
        if self.accounts is not None and self.accounts.is_admin(name):
            view = ItemView(self.task, "", None, 0, 0, header='<div class="rs-head">Admin account: no queue. '
                            'Progress per annotator is below.</div>')
        else:
            view = self._guard(self.service.current, name)
        admin_table = self._progress_table() if admin else ""
        return [*self._outputs(view), who, gr.Column(visible=admin), admin_table]

    def _submit(self, request: gr.Request | None, ref: str, values: list[Any], comment: str, flagged: bool):
        name = self.annotator(request)
        raw: dict[str, Any] = {f: v for (f, _q, _c), v in zip(QUESTIONS[self.task], values)}
        raw["comment"], raw["flagged"] = comment, flagged
        return self._outputs(self._guard(self.service.submit, name, ref, raw))

    def on_submit_change(self, ref: str, label: str, interpretation_valid: str, coherent: str, comment: str,
                         flagged: bool, request: gr.Request):
        return self._submit(request, ref, [label, interpretation_valid, coherent], comment, flagged)

    def on_submit_feature(self, ref: str, validity: str, clinically_relevant: str, comment: str, flagged: bool,
                          request: gr.Request):
        return self._submit(request, ref, [validity, clinically_relevant], comment, flagged)

    def on_skip(self, ref: str, request: gr.Request):
        return self._outputs(self._guard(self.service.skip, self.annotator(request), ref))

    def on_back(self, ref: str, request: gr.Request):
        return self._outputs(self._guard(self.service.back, self.annotator(request), ref))

    def on_next(self, request: gr.Request):
        """The caller's current item (for API clients; the page gets it on load)."""
        return self._outputs(self._guard(self.service.current, self.annotator(request)))

    def on_progress(self, request: gr.Request) -> str:
        if not self.is_admin(self.user(request)):
            raise refuse("Only admin accounts can see everyone's progress.")
        return self._progress_table()

    def _progress_table(self) -> str:
        rows = progress(self.store, self.task)
        cols = ["annotator", "assigned", "done", "skipped", "flagged", "remaining", "median_seconds"]
        head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{views.esc(str(r[c]))}</td>" for c in cols) + "</tr>" for r in rows)
        return f'<table id="rs-admin-table"><tr>{head}</tr>{body}</table>'

    # ---- layout ---------------------------------------------------------------------------

    def _build(self) -> gr.Blocks:
        title = {"change": "Steering change validation", "feature": "Feature validity"}[self.task]
        with gr.Blocks(title=f"radsteer · {title}", analytics_enabled=False) as demo:
            with gr.Row():
                gr.HTML(f"<h2 style='margin:0'>{views.esc(title)}</h2>")
                who = gr.HTML()
            ref = gr.Textbox(visible=False, elem_id="rs-ref")
            prog = gr.HTML(elem_id="rs-progress-box")
            header = gr.HTML(elem_id="rs-header")
            if self.task == "change":
                with gr.Row(equal_height=True):
                    with gr.Column():
                        gr.HTML("<b>Baseline report</b>")
                        left = gr.HTML(elem_id="rs-left")
                    with gr.Column():
                        gr.HTML("<b>Steered report</b> (changes highlighted)")
                        right = gr.HTML(elem_id="rs-right")
                shown = [left, right]
            else:
                gr.HTML("<b>Top-activating contexts</b> (darker = stronger activation)")
                left = gr.HTML(elem_id="rs-left")
                shown = [left]
            radios = []
            for fieldname, question, choices in QUESTIONS[self.task]:
                radios.append(gr.Radio(choices=[(f"{text} [{key}]", value) for value, text, key in choices],
                                       label=question, elem_id=f"rs-{fieldname}"))
            comment = gr.Textbox(label="Comment [c]", lines=2, max_length=MAX_COMMENT, elem_id="rs-comment")
            flagged = gr.Checkbox(label="Flag this item for discussion [f]", elem_id="rs-flag")
            with gr.Row():
                back = gr.Button("← Back [b]", elem_id="rs-back")
                skip = gr.Button("Skip [k]", elem_id="rs-skip")
                submit = gr.Button("Submit [Enter]", variant="primary", elem_id="rs-submit")
            status = gr.HTML(elem_id="rs-status")
            gr.HTML(views.keys_html(keymap(self.task)))
            with gr.Column(visible=False) as admin_col:
                gr.HTML("<h3>Progress per annotator</h3>")
                admin_table = gr.HTML(elem_id="rs-admin")
                refresh = gr.Button("Refresh progress", elem_id="rs-refresh")

            outs = [ref, prog, header, *shown, *radios, comment, flagged, status]
            opts = dict(queue=False, concurrency_limit=None)
            demo.load(self.on_load, None, [*outs, who, admin_col, admin_table], api_visibility="private", **opts)
            submit.click(self.on_submit_change if self.task == "change" else self.on_submit_feature, [ref, *radios, comment, flagged], outs, api_name="submit", **opts)
            skip.click(self.on_skip, [ref], outs, api_name="skip", **opts)
            back.click(self.on_back, [ref], outs, api_name="back", **opts)
            refresh.click(self.on_progress, None, [admin_table], api_name="progress", **opts)
            gr.Button(visible=False).click(self.on_next, None, outs, api_name="next_item", **opts)
        return demo

    def launch(self, host: str = "127.0.0.1", port: int | None = None, *, block: bool = True,
               quiet: bool = False) -> tuple[Any, str]:
        """Serve on `host:port`; returns (FastAPI app, local URL). Never creates a share link."""
        check_serving(host, self.accounts)
        auth = None
        if self.accounts is not None:
            accounts = self.accounts
            auth = lambda u, p: accounts.verify(u, p)  # noqa: E731
        app, url, _ = self.blocks.launch(
            server_name=host, server_port=port, share=False, auth=auth,
            auth_message="Log in with the user name and password your study coordinator gave you.",
            prevent_thread_lock=not block, show_error=True, quiet=quiet, footer_links=[],
            enable_monitoring=False, mcp_server=False, ssr_mode=False, pwa=False, max_file_size="1kb",
            css=views.CSS, head=_script(self.task),
        )
        return app, url

    def close(self) -> None:
        self.blocks.close()


def open_app(run_dir: str | Path, task: str = "change", *, annotators: str | Path | None = None,
             overlap: float = 0.2, seed: int = 0, disagreements_first: bool = False,
             show_automated: bool = False) -> AnnotationApp:
    """The app of the study in `run_dir` (annotators file: given, or RUN_DIR/annotators.json if present)."""
    run_dir = Path(run_dir)
    if not has_study(run_dir):
        raise RadsteerError(f"{run_dir}: no study.sqlite here; run `radsteer sweep` first or check the path")
    path = Path(annotators) if annotators else run_dir / "annotators.json"
    if annotators and not path.exists():
        raise RadsteerError(f"--annotators {path}: file not found; create it with --add-user NAME")
    accounts = Accounts(path) if path.exists() else None
    store = StudyStore.open(run_dir)
    config = QueueConfig(overlap=overlap, seed=seed, disagreements_first=disagreements_first)
    return AnnotationApp(store, task, accounts=accounts, config=config, show_automated=show_automated)
