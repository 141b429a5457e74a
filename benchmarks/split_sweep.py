"""`python benchmarks/split_sweep.py`: two plain local sweeps at once (4 cases each, one thread each) vs one local sweep of 8 cases: is the
2-worker shortfall Ray's or the machine's?"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ["OMP_NUM_THREADS"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
import scaleout as s  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    p, rows = s.write_protocol(root, 8, 32)
    d = yaml.safe_load(p.read_text())
    lines = (root / "cases.jsonl").read_text().splitlines()
    for i, part in enumerate((lines[:4], lines[4:])):
        (root / f"cases{i}.jsonl").write_text("\n".join(part) + "\n")
        dd = dict(d)
        dd["cases"] = {"path": f"cases{i}.jsonl"}
        (root / f"p{i}.yaml").write_text(yaml.safe_dump(dd, sort_keys=False))
    t1 = s.sweep(p, root / "one")

    def cmd(i: int) -> list[str]:
        return [sys.executable, "-m", "protocols.cli", "sweep", str(root / f"p{i}.yaml"),
                "--runs-dir", str(root / f"half{i}"), "--no-progress"]

    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd(i), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outs = [pr.communicate()[0] for pr in procs]
    t2 = time.perf_counter() - t0
    for o in outs:
        print([line for line in o.splitlines() if "rows planned" in line])
    print(f"one local sweep of 8 cases: {t1:.1f} s; two local sweeps of 4 cases at once: {t2:.1f} s; "
          f"ratio {t1 / t2:.2f}; load {os.getloadavg()[0]:.2f}")
