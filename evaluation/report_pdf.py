"""The study report as a PDF: the same HTML, paginated by WeasyPrint (print CSS in evaluation/report.py
keeps figures, table rows and example pairs whole on a page).

WeasyPrint may fetch only `data:` URIs here, so printing, like the page itself, makes no request. The
PDF carries the file identifier `radsteer-report`, so a later run replaces its own PDF but never a
file it did not write.
"""

from __future__ import annotations

from pathlib import Path

from steering.errors import RadsteerError
from steering.store.files import write_atomic

PDF_ID = b"radsteer-report"


def is_radsteer_pdf(path: Path) -> bool:
    """A PDF this module wrote (its trailer's /ID starts with PDF_ID)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 2048))
            tail = fh.read()
    except OSError:
        return False
    return b"/ID [(" + PDF_ID + b")" in tail


def check_pdf_target(out: str | Path):
    """Before anything is written: WeasyPrint importable and `out` free or our own; returns the module."""
    out = Path(out)
    if out.exists() and not is_radsteer_pdf(out):
        raise RadsteerError(f"{out} exists and is not a radsteer report PDF; radsteer will not overwrite it: "
                            f"move it or choose another output file")
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the pango system libraries are missing
        raise RadsteerError(f"--pdf needs WeasyPrint ({type(exc).__name__}: {exc}): "
                            f"pip install 'radsteer[pdf]' (and the pango libraries, e.g. apt install libpango-1.0-0 "
                            f"libpangoft2-1.0-0)") from None
    return weasyprint


def write_pdf(html_text: str, out: str | Path) -> Path:
    """Render `html_text` to `out` (written beside and renamed into place)."""
    out = Path(out)
    weasyprint = check_pdf_target(out)
    fetcher = weasyprint.URLFetcher(allowed_protocols=("data",))
    document = weasyprint.HTML(string=html_text, url_fetcher=fetcher)
    write_atomic(out, lambda tmp: document.write_pdf(tmp, pdf_identifier=PDF_ID))
    return out
