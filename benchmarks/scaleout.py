"""Scale-out, both sides measured in one run.

- ray_speedup_2w: the same sweep (demo model SmolLM2-135M, 16 cases: 144 rows, greedy) with the
  local executor on one thread / with 2 Ray workers of one thread each (a local Ray started for
  the run), back to back, each into a fresh store; the Ray time includes starting Ray and loading
  the model in each worker, the local time loading it once. The stored texts must be equal.
  Each command is then run again on its finished study (every row stored, nothing generated):
  that is its fixed start-up cost, printed beside the generation-only ratio.
- pg_annotation_p95_ms: the annotation benchmark (benchmarks/annotation.py: 10 annotators over
  the real HTTP API) with the study on a real PostgreSQL server started for the run.

    python benchmarks/scaleout.py [--cases 16] [--new-tokens 32] [--annotators 10] [--items 50]

Last line: `ray_speedup_2w=<x> pg_annotation_p95_ms=<ms>`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from steering.store import StudyStore  # noqa: E402
from tests.helpers_postgres import PostgresServer, find_bindir  # noqa: E402

KEY = ["case_id", "feature_id", "alpha", "settings_hash"]


def write_protocol(root: Path, n_cases: int, new_tokens: int) -> tuple[Path, int]:
    """The demo model steered by two random unit directions at layer 8, α ∈ {±0.3, ±0.6}."""
    from steering.demo_model import load_demo_adapter

    d = load_demo_adapter().hidden_size
    g = torch.Generator().manual_seed(0)
    w_dec = torch.randn(2, d, generator=g)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * 2.0
    torch.save({"W_enc": w_dec.T.clone(), "b_enc": torch.zeros(2), "W_dec": w_dec, "b_dec": torch.zeros(d),
                "threshold": torch.tensor(0.1), "k": torch.tensor(1), "group_sizes": torch.tensor([2])},
               root / "ae.pt")
    src = ROOT / "protocols" / "data" / "demo_cases.jsonl"
    lines = src.read_text().splitlines()[:n_cases]
    (root / "cases.jsonl").write_text("\n".join(lines) + "\n")
    alphas = [-0.6, -0.3, 0.3, 0.6]
    protocol = {
        "name": "scaleout", "model": {"kind": "demo", "device": "cpu", "dtype": "float32"},
        "features": {"source": "sae", "path": "ae.pt",
                     "items": [{"id": "f0", "description": "direction 0"}, {"id": "f1", "description": "direction 1"}]},
        "layer": 8, "alphas": alphas,
        "generation": {"max_new_tokens": new_tokens, "batch_size": 8},
        "cases": {"path": "cases.jsonl"},
    }
    path = root / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    return path, n_cases * (1 + 2 * len(alphas))


def sweep(protocol: Path, runs: Path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "protocols.cli", "sweep", str(protocol), "--runs-dir", str(runs),
           "--no-progress", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"sweep {' '.join(extra) or 'local'} failed:\n{res.stderr[-3000:]}")
    print(res.stdout.strip().splitlines()[0], flush=True)
    return wall


def texts(run_dir: Path):
    with StudyStore.open(run_dir) as store:
        df = store.dataframe("generations")
    return df[[*KEY, "text"]].sort_values(KEY).reset_index(drop=True)


def annotation_p95(pg: PostgresServer, n_ann: int, n_items: int) -> tuple[float, int, int]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from annotation import annotator, wait_up  # benchmarks/annotation.py

    from annotation_ui.accounts import Accounts
    from tests.helpers_annotation import free_port, make_study

    expected = n_ann * n_items
    url = pg.create_database()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "study"
        n_features = 5
        make_study(run_dir, n_cases=-(-expected // (2 * n_features)), n_features=n_features, url=url).close()
        accounts = Accounts(run_dir / "annotators.json")
        users = {f"reader{i:02d}": f"password-{i:02d}" for i in range(n_ann)}
        for u, pw in users.items():
            accounts.add(u, pw)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "protocols.cli", "annotate", str(run_dir), "--port", str(port),
                                 "--overlap", "0"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            wait_up(base, proc)
            lat: list[float] = []
            errors: list[str] = []
            barrier = threading.Barrier(n_ann)
            img_lat: list[float] = []  # image fetches: the study has no images, so none are timed here
            threads = [threading.Thread(target=annotator, args=(base, u, pw, n_items, lat, errors, barrier, img_lat))
                       for u, pw in users.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        with StudyStore(url) as store:
            stored = store.count("annotations")
    for e in errors[:5]:
        print("ERROR", e)
    if not lat:
        raise SystemExit(f"no annotation request succeeded ({len(errors)} errors; first above)")
    lat.sort()
    p95 = lat[max(0, int(round(0.95 * len(lat))) - 1)]
    print(f"PostgreSQL annotation: {len(lat)} next_item calls, median {statistics.median(lat):.1f} ms, "
          f"p95 {p95:.1f} ms; {stored} of {expected} answers stored", flush=True)
    return p95, stored, expected


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--annotators", type=int, default=10)
    ap.add_argument("--items", type=int, default=50)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        protocol, rows = write_protocol(root, args.cases, args.new_tokens)
        ray = ("--executor", "ray", "--workers", "2")
        t_local = sweep(protocol, root / "local")
        t_ray = sweep(protocol, root / "ray", *ray)
        same = texts(root / "local" / "scaleout").equals(texts(root / "ray" / "scaleout"))
        print(f"sweep of {rows} rows ({args.new_tokens} new tokens): local 1 thread {t_local:.1f} s, "
              f"2 Ray workers {t_ray:.1f} s (wall time of each command); identical text: {same}", flush=True)
        s_local = sweep(protocol, root / "local")  # every row stored: start-up, planning, shut-down
        s_ray = sweep(protocol, root / "ray", *ray)
        print(f"fixed cost (the same command again, nothing left to generate): local {s_local:.1f} s, "
              f"Ray {s_ray:.1f} s; generation alone: local {t_local - s_local:.1f} s, Ray {t_ray - s_ray:.1f} s, "
              f"ratio {(t_local - s_local) / max(1e-9, t_ray - s_ray):.2f}", flush=True)
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    with PostgresServer(bindir) as pg:
        p95, stored, expected = annotation_p95(pg, args.annotators, args.items)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    print(json.dumps({"rows": rows, "local_s": round(t_local, 2), "ray_s": round(t_ray, 2), "identical": same,
                      "local_fixed_s": round(s_local, 2), "ray_fixed_s": round(s_ray, 2),
                      "stored": stored, "expected": expected}))
    print(f"ray_speedup_2w={t_local / t_ray:.2f} pg_annotation_p95_ms={p95:.1f}")
    return 0 if same and stored == expected else 1


if __name__ == "__main__":
    sys.exit(main())
