"""The study report as a PDF: the same HTML, paginated by WeasyPrint (print CSS in evaluation/report.py
keeps figures, table rows and example pairs whole on a page).

WeasyPrint may fetch only `data:` URIs here, so printing, like the page itself, makes no request.
"""

from __future__ import annotations

from pathlib import Path

from steering.errors import RadsteerError


def write_pdf(html_text: str, out: str | Path) -> Path:
    """Render `html_text` to `out` (written beside and renamed into place)."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the pango system libraries are missing
        raise RadsteerError(f"--pdf needs WeasyPrint ({type(exc).__name__}: {exc}): "
                            f"pip install 'radsteer[pdf]' (and the pango libraries, e.g. apt install libpango-1.0-0 "
                            f"libpangoft2-1.0-0)") from None
    out = Path(out)
    tmp = out.with_suffix(out.suffix + ".tmp")
    fetcher = weasyprint.URLFetcher(allowed_protocols=("data",))
    weasyprint.HTML(string=html_text, url_fetcher=fetcher).write_pdf(tmp)
    tmp.replace(out)
    return out
