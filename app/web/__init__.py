"""The web page: static files served by the API at `/`, no build step, nothing from a CDN.

Every file here is public (the page asks for a key and sends it on each API call it makes);
`PUBLIC_PATHS` tells the auth middleware which paths those are, exactly.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_PREFIX = "/web"


def content_security_policy(upload_origin: str | None = None) -> str:
    """The page's own scripts, styles and API calls only: no inline script or style, no framing; and PUTs
    to the uploads bucket's presigned URLs at `upload_origin` (the one other origin the page talks to)."""
    connect = "'self'" + (f" {upload_origin}" if upload_origin else "")
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src {connect}; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


# Without an uploads bucket to PUT to (an app served without its lifespan): the page's own origin only.
CONTENT_SECURITY_POLICY = content_security_policy()
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a URL with a stream token never leaves in a Referer
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cache-Control": "no-cache",  # revalidate (ETag): a new version is seen at once
}

PUBLIC_PATHS = frozenset(["/", *(f"{PAGE_PREFIX}/{f.name}" for f in STATIC_DIR.iterdir() if f.is_file())])
