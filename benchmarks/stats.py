"""Statistics plus the shareable report for a synthetic study of 20,000 steered generations.

The store is filled by evaluation.synthetic (500 cases × 10 features × 4 α + 500 baselines,
three automated methods, radiologist reads with double reads), then timed separately:
reading the store, computing every statistic (2000 bootstrap resamples, GEE fits, tests) and
writing the HTML report with its CSV/Parquet tables, then printing that report to PDF (WeasyPrint).
Goal: statistics + report ≤ 15 s on 2 cores with the report's figures (stacked bars, exact Spearman p).

    python benchmarks/stats.py [--cases 500] [--features 10] [--no-pdf]

Last line: `report_seconds_20k=<s> pdf_seconds_20k=<s>` (load + statistics + HTML report; the PDF alone).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/evaluation.py would otherwise shadow the evaluation package


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--keep", type=Path, default=None, help="write the study here and keep it")
    ap.add_argument("--no-pdf", action="store_true", help="skip the PDF (pdf_seconds_20k=nan)")
    args = ap.parse_args()

    import torch  # only to pin threads like every benchmark; evaluation itself never imports it

    torch.set_num_threads(1)
    from evaluation.report import build_report
    from evaluation.stats import compute_statistics
    from evaluation.study_data import load_study
    from evaluation.synthetic import make_synthetic_study

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or Path(tmp) / "study"
        t0 = time.perf_counter()
        syn = make_synthetic_study(run_dir, n_cases=args.cases, n_features=args.features,
                                   alphas=(-10.0, -5.0, 5.0, 10.0), annotated_fraction=0.1, seed=0)
        t_fill = time.perf_counter() - t0
        n_steered = syn.n_generations - args.cases

        c0 = time.process_time()
        t0 = time.perf_counter()
        data = load_study(run_dir)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats = compute_statistics(data, n_boot=2000, seed=0)
        t_stats = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = build_report(run_dir, run_dir / "report.html", stats=stats, data=data, n_examples=12)
        t_report = time.perf_counter() - t0
        cpu_report = time.process_time() - c0
        size_mb = res.html_path.stat().st_size / 1e6
        t_pdf, pages = float("nan"), 0
        cpu_pdf = float("nan")
        if not args.no_pdf:
            from evaluation.report_pdf import write_pdf

            html = res.html_path.read_text(encoding="utf-8")
            c0 = time.process_time()
            t0 = time.perf_counter()
            pdf = write_pdf(html, run_dir / "report.pdf")
            t_pdf = time.perf_counter() - t0
            cpu_pdf = time.process_time() - c0
            try:
                import pypdf

                pages = len(pypdf.PdfReader(pdf).pages)
            except ImportError:
                pages = 0

    total = t_load + t_stats + t_report
    print(f"synthetic study: {syn.n_generations} generations ({n_steered} steered), "
          f"{len(data.verdicts)} verdicts, {len(data.annotations)} annotations; filled in {t_fill:.1f} s")
    print(f"  load store      {t_load:6.2f} s")
    print(f"  statistics      {t_stats:6.2f} s")
    print(f"  report + tables {t_report:6.2f} s  (HTML {size_mb:.2f} MB, {len(res.files)} files)")
    print(f"  PDF             {t_pdf:6.2f} s  ({pages} pages)")
    print(f"  CPU time of this process: load + statistics + report {cpu_report:.2f} s, PDF {cpu_pdf:.2f} s "
          f"(wall clock above depends on what else the machine runs)")
    print(f"report_seconds_20k={total:.2f} pdf_seconds_20k={t_pdf:.2f}")


if __name__ == "__main__":
    main()
