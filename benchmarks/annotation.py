"""Annotation app under load: 10 annotators answering 50 items each at the same time.

The real server (`radsteer annotate`, a separate process, 127.0.0.1) with ten scrypt-hashed
accounts, on a study whose cases have a 518×518 frontal and lateral image (`--no-images`: text
only); each simulated annotator logs in through /login and then loops `next_item` → fetch the
item's images (as the page does) → `submit` over the app's own HTTP API. Timed: every
`next_item` call, from request to parsed reply (and, reported apart, every image fetch).
Checked: the store holds every answer exactly once.

Before that, one annotator's `next_item` median alone and while 4 threads post logins (each a
scrypt check), side by side: the login check must not stall other readers.

    python benchmarks/annotation.py [--annotators 10] [--items 50] [--no-images]

Last line: `next_item_p95_ms=<ms> stored=<rows in the store> expected=<annotators*items>`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotation_ui.accounts import Accounts  # noqa: E402
from steering.store import StudyStore  # noqa: E402
from tests.helpers_annotation import add_case_images, free_port, make_study  # noqa: E402

SRC = re.compile(r'src="(rs/image/[^"]+)"')


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("server did not start")


def annotator(url: str, name: str, password: str, n: int, lat: list[float], errors: list[str],
              start: threading.Barrier, img_lat: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/login", data={"username": name, "password": password})
        if r.status_code != 200:
            errors.append(f"{name}: login {r.status_code}")
            return
        start.wait()
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post("/gradio_api/run/next_item", json={"data": ["change"]})
            lat.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                errors.append(f"{name}: next_item {r.status_code} {r.text[:200]}")
                return
            data = r.json()["data"]
            ref = data[0]
            for src in SRC.findall(data[4] or ""):
                t0 = time.perf_counter()
                img = c.get("/" + src)
                img_lat.append((time.perf_counter() - t0) * 1000)
                if img.status_code != 200 or not img.content.startswith(b"\x89PNG"):
                    errors.append(f"{name}: image {img.status_code}")
                    return
            label = ("on", "off", "both", "none")[i % 4]
            r = c.post("/gradio_api/run/submit",
                       json={"data": [ref, label, "yes", "yes", None, None, f"{name} item {i}", i % 7 == 0]})
            if r.status_code != 200 or "Saved" not in r.text:
                errors.append(f"{name}: submit {r.status_code} {r.text[:200]}")
                return


def login_stall(url: str, users: dict[str, str], n: int = 40) -> tuple[float, float, int]:
    """(median next_item ms alone, median while 4 threads post logins, logins served meanwhile)."""
    (reader, pw), (other, opw) = list(users.items())[:2]
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.post("/login", data={"username": reader, "password": pw}).status_code == 200

        def med() -> float:
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                c.post("/gradio_api/run/next_item", json={"data": ["feature"]})
                lat.append((time.perf_counter() - t0) * 1000)
            return statistics.median(lat)

        quiet = med()
        stop, count = threading.Event(), [0]

        def hammer() -> None:
            with httpx.Client(base_url=url, timeout=60) as h:
                while not stop.is_set():
                    h.post("/login", data={"username": other, "password": opw})
                    count[0] += 1

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        loaded = med()
        stop.set()
        for t in threads:
            t.join()
    return quiet, loaded, count[0]


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process so far (Linux /proc), None elsewhere: the server's own
    cost per request, which the machine's load does not inflate the way it inflates latency."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=10)
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--no-images", action="store_true", help="text-only cases (no frontal/lateral images)")
    args = ap.parse_args()
    n_ann, n_items = args.annotators, args.items
    expected = n_ann * n_items
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "study"
        # n_cases × n_features × 2 alphas steered generations = exactly `expected` items
        n_features = 5
        n_cases = -(-expected // (2 * n_features))
        store = make_study(run_dir, n_cases=n_cases, n_features=n_features)
        if not args.no_images:
            add_case_images(store, run_dir, size=518)
        store.close()
        accounts = Accounts(run_dir / "annotators.json")
        users = {f"reader{i:02d}": f"password-{i:02d}" for i in range(n_ann)}
        for u, pw in users.items():
            accounts.add(u, pw)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "protocols.cli", "annotate", str(run_dir), "--port", str(port),
             "--overlap", "0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            t0 = time.time()
            wait_up(url, proc)
            print(f"server up in {time.time() - t0:.1f} s ({n_ann} annotators, {expected} items, "
                  f"images {'off' if args.no_images else 'on'})", flush=True)
            quiet, loaded, n_logins = login_stall(url, users)
            print(f"login stall: next_item median {quiet:.1f} ms alone, {loaded:.1f} ms while 4 threads posted "
                  f"{n_logins} logins (ratio {loaded / quiet:.2f})", flush=True)
            lat: list[float] = []
            img_lat: list[float] = []
            errors: list[str] = []
            barrier = threading.Barrier(n_ann)
            threads = [threading.Thread(target=annotator, args=(url, u, pw, n_items, lat, errors, barrier, img_lat))
                       for u, pw in users.items()]
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            cpu1 = cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        with StudyStore.open(run_dir) as store:
            rows = store.rows("annotations")
        keys = {(r["task"], r["item_key"], r["annotator"]) for r in rows}
        for e in errors[:5]:
            print("ERROR", e)
        lat.sort()
        p95 = lat[max(0, int(round(0.95 * len(lat))) - 1)] if lat else float("nan")
        print(f"{len(lat)} next_item calls in {wall:.1f} s: median {statistics.median(lat):.1f} ms, "
              f"p95 {p95:.1f} ms, max {lat[-1]:.1f} ms; {len(rows)} rows, {len(keys)} distinct keys")
        if img_lat:
            img_lat.sort()
            print(f"{len(img_lat)} image fetches: median {statistics.median(img_lat):.1f} ms, "
                  f"p95 {img_lat[int(0.95 * len(img_lat)) - 1]:.1f} ms")
        if cpu0 is not None and cpu1 is not None:
            print(f"server CPU {cpu1 - cpu0:.1f} s for {len(lat)} next_item+submit pairs (and their images): "
                  f"{1000 * (cpu1 - cpu0) / max(len(lat), 1):.1f} ms per pair; load average "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"next_item_p95_ms={p95:.1f} stored={len(rows)} expected={expected}")
        return 0 if not errors and len(rows) == len(keys) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
