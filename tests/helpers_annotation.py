"""Study stores and servers for the annotation-app tests and benchmark (no model needed: the
app only reads what a sweep, the evaluator and the miner would have stored)."""

from __future__ import annotations

import socket
from pathlib import Path

from steering.store import BASELINE_FEATURE, StudyStore

FINDINGS = ["small left pleural effusion", "mild cardiomegaly", "right basal atelectasis",
            "no pneumothorax", "left lower lobe consolidation", "stable sternotomy wires"]


def make_study(run_dir: Path, *, n_cases: int = 4, n_features: int = 2, alphas: tuple[float, ...] = (8.0, -8.0),
               verdicts: bool = True, contexts: bool = True, url: str | None = None) -> StudyStore:
    """A study with baselines, steered generations and (optionally) verdicts and contexts.

    One steered text contains markup, so tests can check it is rendered as text."""
    store = StudyStore.open(run_dir, url)  # url: a PostgreSQL database instead of run_dir/study.sqlite
    store.add_cases([{"case_id": f"c{i}", "inputs": {"indication": f"cough, case {i}"}, "split": "test"}
                     for i in range(n_cases)])
    store.add_features([{"feature_id": f"f{j}", "source": "sae", "bank_index": j,
                         "description": f"mentions of {FINDINGS[j % len(FINDINGS)].split()[-1]} <b>bold</b>",
                         "target_concepts": [FINDINGS[j % len(FINDINGS)].split()[-1]]} for j in range(n_features)])
    rows = []
    for i in range(n_cases):
        base = f"Heart size normal. {FINDINGS[i % len(FINDINGS)].capitalize()}. Lungs otherwise clear."
        rows.append(dict(case_id=f"c{i}", feature_id=BASELINE_FEATURE, alpha=0.0, settings_hash="s", text=base,
                         n_tokens=12, finish_reason="eos", seconds=0.1))
        for j in range(n_features):
            for a in alphas:
                extra = FINDINGS[(i + j + 1) % len(FINDINGS)]
                text = (f"Heart size normal. {extra.capitalize()}. Lungs otherwise clear."
                        if a > 0 else f"Heart size normal. Lungs clear. <script>alert({i})</script>")
                rows.append(dict(case_id=f"c{i}", feature_id=f"f{j}", alpha=a, settings_hash="s", text=text,
                                 n_tokens=12, finish_reason="eos", seconds=0.1))
    store.add_generations(rows)
    gens = [g for g in store.rows("generations") if g["feature_id"] != BASELINE_FEATURE]
    if verdicts:
        vrows = []
        for g in gens:
            vrows.append(dict(generation_id=g["id"], method="combined", on_target=g["alpha"] > 0,
                              off_target=g["id"] % 3 == 0, label="on" if g["alpha"] > 0 else "none",
                              evidence={}, disagreement=g["id"] % 4 == 0))
        store.insert_ignore("verdicts", vrows)
    if contexts:
        crows = []
        for j in range(n_features):
            for r in range(3):
                toks = [" The", " left", " pleural", " effusion", " <i>is</i>", " small", "."]
                acts = [0.0, 0.5, 2.0, 4.0 - r, 1.0, 0.2, 0.0]
                crows.append(dict(feature_id=f"f{j}", kind="top", rank=r, activation=max(acts), doc_id=f"doc{r}",
                                  token_index=3, tokens=toks, activations=acts))
        store.insert_ignore("feature_contexts", crows)
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-12", "boss": "boss-pass-1"}


def make_accounts(path: Path) -> Path:
    """Two annotators and an admin (scrypt hashes written by the real accounts module)."""
    from annotation_ui.accounts import Accounts

    acc = Accounts(path)
    for name, pw in PASSWORDS.items():
        acc.add(name, pw, role="admin" if name == "boss" else "annotator")
    return path


class Server:
    """The real app on 127.0.0.1:<free port>, served from a thread of this process."""

    def __init__(self, store: StudyStore, task: str, accounts_path: Path | None, **config) -> None:
        from annotation_ui.accounts import Accounts
        from annotation_ui.app import AnnotationApp
        from annotation_ui.queues import QueueConfig

        accounts = Accounts(accounts_path) if accounts_path else None
        self.app = AnnotationApp(store, task, accounts=accounts, config=QueueConfig(**config))
        self.port = free_port()
        self.app.launch("127.0.0.1", self.port, block=False, quiet=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, user: str | None = None):
        """An httpx client logged in as `user` through the app's /login form."""
        import httpx

        c = httpx.Client(base_url=self.url, timeout=30)
        if user is not None:
            r = c.post("/login", data={"username": user, "password": PASSWORDS[user]})
            assert r.status_code == 200, r.text
        return c

    def close(self) -> None:
        self.app.close()


def call(client, endpoint: str, *data):
    """POST one of the app's Gradio endpoints; returns (status, json)."""
    r = client.post(f"/gradio_api/run/{endpoint}", json={"data": list(data)})
    return r.status_code, r.json()
