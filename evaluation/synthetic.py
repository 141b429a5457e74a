"""A synthetic steering study with known rates, written into a real study store.

Statistics and reports are built and tested before (and independently of) the GPU sweep:
this module fills a store the way sweep → evaluate → annotate would — cases, features,
baseline and steered generations, verdicts of every method (with some judge errors),
radiologists' "change" annotations with double reads — from rates chosen here, so a test
can check that the statistics find what was planted, and the benchmark can build 20,000
generations in seconds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from steering.store import BASELINE_FEATURE, StudyStore, build_manifest, write_manifest

SETTINGS_HASH = "synthetic-greedy"
_FINDINGS = [
    ("pleural_effusion", "There is a small left pleural effusion."),
    ("pneumothorax", "A small apical pneumothorax is present on the right."),
    ("cardiomegaly", "The heart is enlarged."),
    ("consolidation", "There is consolidation in the right lower lobe."),
    ("atelectasis", "Bibasilar atelectasis is noted."),
    ("pulmonary_edema", "There is mild interstitial pulmonary edema."),
    ("support_device", "An endotracheal tube is in standard position."),
    ("nodule", "A 6 mm nodule projects over the left upper lobe."),
]
_NORMAL = [
    "The lungs are clear.", "No focal consolidation.", "Heart size is normal.",
    "No pleural effusion or pneumothorax.", "The mediastinal contours are unremarkable.",
    "No acute osseous abnormality.",
]


@dataclass
class SyntheticStudy:
    """What was written, and the truth it was drawn from."""

    run_dir: Path
    n_generations: int
    true_on_rate: pd.DataFrame  # feature_id, direction, abs_alpha, p_on
    annotators: list[str] = field(default_factory=list)


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _label(on: np.ndarray, off: np.ndarray) -> np.ndarray:
    return np.where(on & off, "both", np.where(on, "on", np.where(off, "off", "none")))


def _flip(labels: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Replace a fraction `p` of labels by a uniformly drawn label: a noisy rater."""
    out = labels.copy()
    mask = rng.random(len(out)) < p
    out[mask] = rng.choice(np.array(["on", "off", "both", "none"]), size=int(mask.sum()))
    return out


def make_synthetic_study(
    run_dir: str | Path,
    *,
    n_cases: int = 20,
    n_features: int = 5,
    alphas: Sequence[float] = (-10.0, -5.0, 5.0, 10.0),
    annotators: Sequence[str] = ("rad1", "rad2", "rad3"),
    annotated_fraction: float = 0.3,
    double_read_fraction: float = 0.3,
    judge_error_rate: float = 0.02,
    methods: Sequence[str] = ("entity_diff", "llm_judge", "combined"),
    dose_slope: float = 0.25,
    off_rate: float = 0.15,
    injected_text: str | None = None,
    write_files: bool = True,
    seed: int = 0,
) -> SyntheticStudy:
    """Write a synthetic study into `run_dir` and return what was planted.

    The on-target probability of feature f in direction d at |α| is
    expit(a_f + d_shift + dose_slope·(|α| − mean|α|)) with a_f spread across features, so
    positive and negative steering correlate across features and rates rise with |α|.
    `injected_text`, when given, is appended to one steered text (to test escaping).
    """
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    store = StudyStore.open(run_dir)
    try:
        cases = [f"case{i:05d}" for i in range(n_cases)]
        feats = [f"feat{j:03d}" for j in range(n_features)]
        store.add_cases([{"case_id": c, "inputs": {"indication": "cough"}, "split": "test"} for c in cases])
        store.add_features([
            {"feature_id": f, "source": "sae", "bank_index": j,
             "description": f"{_FINDINGS[j % len(_FINDINGS)][0].replace('_', ' ')} (feature {j})",
             "target_concepts": [_FINDINGS[j % len(_FINDINGS)][0]], "interpretability": None}
            for j, f in enumerate(feats)
        ])
        base_text = {c: " ".join(rng.choice(_NORMAL, size=3, replace=False)) for c in cases}
        gens = [dict(case_id=c, feature_id=BASELINE_FEATURE, alpha=0.0, settings_hash=SETTINGS_HASH,
                     text=base_text[c], n_tokens=len(base_text[c].split()), finish_reason="eos", seconds=0.5)
                for c in cases]
        store.add_generations(gens)

        steered_alphas = [float(a) for a in alphas if float(a) != 0.0]
        grid = pd.MultiIndex.from_product([cases, feats, steered_alphas], names=["case_id", "feature_id", "alpha"])
        g = grid.to_frame(index=False)
        a_f = dict(zip(feats, np.linspace(-2.0, 1.0, max(n_features, 1)), strict=False))
        abs_a = g.alpha.abs().to_numpy()
        mean_abs = float(np.mean(np.abs(steered_alphas))) if steered_alphas else 0.0
        direction = np.sign(g.alpha.to_numpy())
        logit = g.feature_id.map(a_f).to_numpy() + np.where(direction > 0, 0.0, -0.3) + dose_slope * (abs_a - mean_abs)
        p_on = _expit(logit)
        on = rng.random(len(g)) < p_on
        off = rng.random(len(g)) < off_rate
        truth = _label(on, off)
        finding = {f: _FINDINGS[j % len(_FINDINGS)][1] for j, f in enumerate(feats)}
        texts = []
        for c, f, lab in zip(g.case_id, g.feature_id, truth, strict=True):
            t = base_text[c]
            if lab in ("on", "both"):
                t = f"{t} {finding[f]}"
            if lab in ("off", "both"):
                t = f"{t} Degenerative changes of the spine."
            if lab == "none":
                t = t.replace("The lungs are clear.", "Lungs are clear.")
            texts.append(t)
        if injected_text is not None and len(texts):
            texts[0] = f"{texts[0]} {injected_text}"
        g["settings_hash"] = SETTINGS_HASH
        g["text"] = texts
        g["n_tokens"] = [len(t.split()) for t in texts]
        g["finish_reason"] = "eos"
        g["seconds"] = 0.5
        store.add_generations(g.to_dict("records"))

        ids = store.dataframe("generations")[["id", "case_id", "feature_id", "alpha"]]
        g = g.merge(ids, on=["case_id", "feature_id", "alpha"], how="left")
        g["truth"] = truth
        noise = {"entity_diff": 0.15, "llm_judge": 0.10, "combined": 0.08}
        verdicts = []
        for method in methods:
            labels = _flip(truth, noise.get(method, 0.1), rng)
            err = (rng.random(len(g)) < judge_error_rate) if method == "llm_judge" else np.zeros(len(g), bool)
            for gid, lab, e in zip(g.id.tolist(), labels.tolist(), err.tolist(), strict=True):
                row = dict(generation_id=gid, method=method, evidence={}, judge_model=None, prompt_hash=None,
                           disagreement=None)
                if e:
                    row.update(on_target=None, off_target=None, label=None, error="HTTP 500 after 4 retries")
                else:
                    row.update(on_target=lab in ("on", "both"), off_target=lab in ("off", "both"), label=lab,
                               error=None)
                if method == "combined":
                    row["disagreement"] = bool(rng.random() < 0.1)
                verdicts.append(row)
        store.insert_ignore("verdicts", verdicts)

        anns = []
        if annotators and len(g):
            chosen = rng.random(len(g)) < annotated_fraction
            doubles = rng.random(len(g)) < double_read_fraction
            for k, (gid, lab) in enumerate(zip(g.id.tolist(), truth.tolist(), strict=True)):
                if not chosen[k]:
                    continue
                n_read = min(2, len(annotators)) if doubles[k] else 1
                for who in rng.choice(np.array(annotators), size=n_read, replace=False).tolist():
                    answer = _flip(np.array([lab]), 0.1, rng)[0]
                    anns.append(dict(task="change", item_key=str(gid), generation_id=gid, feature_id=None,
                                     annotator=who, seconds=float(rng.uniform(5, 60)), shown_order=k,
                                     answers={"label": answer, "interpretation_valid": "yes", "coherent": "yes",
                                              "comment": "", "flagged": False}))
            unread = np.flatnonzero(~chosen)
            if len(unread):  # one skipped item: stored, but never counted as a read
                skip_gid = int(g.id.iloc[unread[0]])
                anns.append(dict(task="change", item_key=str(skip_gid), generation_id=skip_gid, feature_id=None,
                                 annotator=annotators[0], answers={"skipped": True}, seconds=1.0, shown_order=0))
            for f in feats:
                anns.append(dict(task="feature", item_key=f, generation_id=None, feature_id=f,
                                 annotator=annotators[0], seconds=20.0, shown_order=0,
                                 answers={"validity": "valid", "clinically_relevant": "yes", "comment": "",
                                          "flagged": False}))
        store.insert_ignore("annotations", anns)
    finally:
        store.close()

    if write_files:
        write_manifest(run_dir, build_manifest(
            protocol_hash="synthetic", model={"kind": "synthetic", "sha256": "0" * 64},
            sae={"path": "synthetic", "sha256": "1" * 64}, seeds={"synthetic": seed},
            layer_module="model.layers.15", vector_space="residual"))
        (run_dir / "protocol.yaml").write_text(  # a valid protocol (protocols.schema) of this design
            "# synthetic study written by evaluation.synthetic\n"
            "name: synthetic\nmodel: {kind: hf_causal_lm, path: model}\nlayer: 15\n"
            f"alphas: [{', '.join(str(a) for a in alphas)}]\n"
            f"cases: {{path: cases.jsonl, limit: {n_cases}}}\n"
            "features:\n  source: sae\n  path: sae\n  items:\n" + "".join(f"    - id: {f}\n" for f in feats)
        )
    truth_df = pd.DataFrame({"feature_id": g.feature_id, "direction": np.sign(g.alpha).astype(int),
                             "abs_alpha": g.alpha.abs(), "p_on": p_on}).drop_duplicates(
        ["feature_id", "direction", "abs_alpha"]).reset_index(drop=True)
    return SyntheticStudy(run_dir=run_dir, n_generations=n_cases * (1 + n_features * len(steered_alphas)),
                          true_on_rate=truth_df, annotators=list(annotators))


# ---------------------------------------------------------------------------------------------
# A corpus of synthetic chest X-ray reports (for training and mining an SAE offline)
# ---------------------------------------------------------------------------------------------

# concept → sentence templates asserting it ({sev}, {side}, {Side}, {n} are filled per report)
_CORPUS_FINDINGS: dict[str, tuple[str, ...]] = {
    "pleural_effusion": ("There is a {sev} {side} pleural effusion.", "{Sev} {side} pleural effusion.",
                         "Small bilateral pleural effusions are present.",
                         "Blunting of the {side} costophrenic angle from a small pleural effusion.",
                         "The {side} pleural effusion has increased."),
    "pneumothorax": ("There is a {sev} {side} apical pneumothorax.", "{Sev} {side} pneumothorax.",
                     "A {side} pneumothorax is again seen.", "A thin pleural line at the {side} apex indicates a pneumothorax."),
    "cardiomegaly": ("The heart is enlarged.", "{Sev} cardiomegaly.", "The cardiac silhouette is enlarged.",
                     "Cardiomegaly is unchanged."),
    "consolidation": ("There is consolidation in the {side} lower lobe.", "{Sev} {side} basilar consolidation.",
                      "Patchy consolidation in the {side} upper lobe, concerning for pneumonia."),
    "pulmonary_edema": ("There is {sev} pulmonary edema.", "{Sev} interstitial pulmonary edema.",
                        "Pulmonary vascular congestion with {sev} edema."),
    "atelectasis": ("{Side} basilar atelectasis.", "There is {sev} atelectasis at the {side} base.",
                    "Plate-like atelectasis in the {side} lower lobe."),
    "nodule": ("A {n} mm nodule projects over the {side} upper lobe.", "There is a {n} mm {side} lung nodule."),
    "fracture": ("There is a fracture of the {side} sixth rib.", "Healed {side} rib fractures."),
    "pacemaker": ("A left-sided pacemaker is present with leads in the right atrium and right ventricle.",
                  "A dual-chamber pacemaker is in place.", "The pacemaker leads are unchanged in position."),
    "endotracheal_tube": ("An endotracheal tube terminates {n} cm above the carina.",
                          "The endotracheal tube is in standard position."),
    "chest_tube": ("A {side} chest tube is in place.", "The {side} chest tube is unchanged."),
    "central_venous_catheter": ("A right internal jugular central venous catheter ends in the SVC.",
                                "A {side} PICC line terminates in the lower SVC."),
}
_CORPUS_NEGATIONS: dict[str, str] = {
    "pleural_effusion": "No pleural effusion.", "pneumothorax": "No pneumothorax.",
    "consolidation": "No focal consolidation.", "pulmonary_edema": "No pulmonary edema.",
    "cardiomegaly": "The heart size is normal.", "fracture": "No acute osseous abnormality.",
}
_CORPUS_NORMAL = (
    "The lungs are clear.", "The heart size is normal.", "The mediastinal contours are unremarkable.",
    "The osseous structures are intact.", "The hila are normal.", "The cardiac silhouette is normal.",
    "No acute cardiopulmonary abnormality.", "Both lungs are well expanded.", "The trachea is midline.",
)
_CORPUS_INDICATIONS = (
    "Shortness of breath.", "Cough and fever.", "Chest pain.", "Follow-up of pneumonia.", "Pre-operative assessment.",
    "Heart failure.", "Trauma, rib pain.", "Line placement.", "Hypoxia.", "Pacemaker check.", "Weight loss.",
)
_CORPUS_COMPARISONS = ("None.", "Chest radiograph from yesterday.", "Chest radiograph from last week.",
                       "Prior study from two days ago.")


def synthetic_report(rng: random.Random) -> tuple[str, list[str]]:
    """One synthetic report in the demo prompt's layout, and the concepts it asserts."""
    present = rng.sample(list(_CORPUS_FINDINGS), rng.choice((0, 1, 1, 2, 2, 3)))
    side = rng.choice(("left", "right"))
    sev = rng.choice(("small", "moderate", "large", "mild", "trace"))
    fill = {"sev": sev, "Sev": sev.capitalize(), "side": side, "Side": side.capitalize(), "n": rng.randint(2, 12)}
    sentences = [rng.choice(_CORPUS_FINDINGS[c]).format(**fill) for c in present]
    negatable = [c for c in _CORPUS_NEGATIONS if c not in present]
    sentences += [_CORPUS_NEGATIONS[c] for c in rng.sample(negatable, min(len(negatable), rng.randint(1, 3)))]
    sentences += rng.sample(_CORPUS_NORMAL, rng.randint(1, 3))
    rng.shuffle(sentences)
    comparison = rng.choice(_CORPUS_COMPARISONS)
    text = (f"INDICATION: {rng.choice(_CORPUS_INDICATIONS)}\nCOMPARISON: {comparison}\n"
            f"FINDINGS: {' '.join(sentences)}")
    return text, sorted(present)


def report_corpus_bytes(n_reports: int = 2000, *, seed: int = 0, prefix: str = "syn") -> bytes:
    """A JSONL corpus of synthetic reports ({"id", "text", "concepts"}); the same arguments always
    give the same bytes, so its hash can key a cache (the demo's SAE)."""
    if n_reports < 1:
        raise ValueError(f"n_reports must be at least 1, not {n_reports}")
    rng = random.Random(seed)
    lines = []
    for i in range(n_reports):
        text, present = synthetic_report(rng)
        lines.append(json.dumps({"id": f"{prefix}{i:05d}", "text": text, "concepts": present}) + "\n")
    return "".join(lines).encode("utf-8")


def write_report_corpus(path: str | Path, n_reports: int = 2000, *, seed: int = 0, prefix: str = "syn") -> Path:
    """`report_corpus_bytes` written to `path` atomically (beside it, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(report_corpus_bytes(n_reports, seed=seed, prefix=prefix))
    tmp.replace(path)
    return path
