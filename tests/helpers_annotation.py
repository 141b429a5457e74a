"""Study stores and servers for the annotation-app tests and benchmark (no model needed: the
app only reads what a sweep, the evaluator and the miner would have stored)."""

from __future__ import annotations

import socket
import zlib
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


PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-12", "boss": "boss-pass-1", "judy": "judy-pass-1"}
ROLES = {"boss": "admin", "judy": "adjudicator"}


def make_accounts(path: Path) -> Path:
    """Two annotators, an admin and an adjudicator (scrypt hashes written by the real accounts module)."""
    from annotation_ui.accounts import Accounts

    acc = Accounts(path)
    for name, pw in PASSWORDS.items():
        acc.add(name, pw, role=ROLES.get(name, "annotator"))
    return path


def add_case_images(store: StudyStore, run_dir: Path, *, size: int = 518, dicom_lateral: bool = False) -> dict:
    """Give every case a frontal and a lateral image (PNG; the lateral as DICOM written by pydicom
    when asked), the way a MAIRA-2 case file would: absolute paths in `cases.inputs`."""
    import numpy as np
    from PIL import Image

    img_dir = run_dir / "images"
    img_dir.mkdir(exist_ok=True)
    rows = []
    for case in store.rows("cases"):
        rng = np.random.default_rng(zlib.crc32(case["case_id"].encode()))
        yy, xx = np.mgrid[0:size, 0:size]
        frontal = (127 + 100 * np.sin(xx / 23.0) * np.cos(yy / 31.0) + rng.normal(0, 8, (size, size))).clip(0, 255)
        fpath = img_dir / f"{case['case_id']}_pa.png"
        Image.fromarray(frontal.astype(np.uint8)).save(fpath)
        lateral = (xx * 4095 / size).astype(np.uint16)
        if dicom_lateral:
            from tests.helpers_dicom import write_dicom

            lpath = write_dicom(img_dir / f"{case['case_id']}_lat.dcm", lateral, window=(2048, 4096))
        else:
            lpath = img_dir / f"{case['case_id']}_lat.png"
            Image.fromarray((lateral // 16).astype(np.uint8)).save(lpath)
        inputs = dict(case["inputs"], frontal=str(fpath), lateral=str(lpath))
        rows.append(dict(case, inputs=inputs))
    store.add_cases(rows)
    return {r["case_id"]: r["inputs"] for r in rows}


class Server:
    """The real app on 127.0.0.1:<free port>, served from a thread of this process."""

    def __init__(self, store: StudyStore, task, accounts_path: Path | None, *, throttle=None, assignments=None,
                 **config) -> None:
        from annotation_ui.accounts import Accounts
        from annotation_ui.app import AnnotationApp
        from annotation_ui.queues import QueueConfig

        accounts = Accounts(accounts_path) if accounts_path else None
        self.app = AnnotationApp(store, task, accounts=accounts, config=QueueConfig(**config), throttle=throttle,
                                 assignments=assignments)
        self.port = free_port()
        self.app.launch("127.0.0.1", self.port, block=False, quiet=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, user: str | None = None, *, password: str | None = None, source: str | None = None,
               cookies: dict | None = None):
        """An httpx client (from local address `source`, e.g. 127.0.0.5) logged in as `user` through /login."""
        import httpx

        transport = httpx.HTTPTransport(local_address=source) if source else None
        c = httpx.Client(base_url=self.url, timeout=60, transport=transport, cookies=cookies)
        if user is not None:
            r = c.post("/login", data={"username": user, "password": password or PASSWORDS[user]})
            assert r.status_code == 200, r.text
        return c

    def close(self) -> None:
        self.app.close()


def call(client, endpoint: str, *data):
    """POST one of the app's Gradio endpoints; returns (status, json)."""
    r = client.post(f"/gradio_api/run/{endpoint}", json={"data": list(data)})
    return r.status_code, r.json()
