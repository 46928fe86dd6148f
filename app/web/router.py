"""Serve the page: `/` is index.html, `/web/*` its scripts and styles, each with the security headers."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.web import PAGE_PREFIX, SECURITY_HEADERS, STATIC_DIR, content_security_policy

router = APIRouter()


async def page_headers(app: FastAPI) -> dict[str, str]:
    """SECURITY_HEADERS, the uploads bucket's origin allowed to `connect-src`: worked out once per app."""
    headers: dict[str, str] | None = getattr(app.state, "page_headers", None)
    if headers is None:
        policy = content_security_policy(await _upload_origin(app))
        headers = app.state.page_headers = {**SECURITY_HEADERS, "Content-Security-Policy": policy}
    return headers


async def _upload_origin(app: FastAPI) -> str | None:
    """The origin of the presigned URLs the page PUTs files to: taken from a URL the uploads' presigner
    signs (app/uploads opens it in the lifespan), so it is the origin every upload URL has, whatever
    botocore's addressing (`<bucket>.s3.amazonaws.com`, a regional endpoint, the embedded AWS)."""
    presigner = getattr(app.state, "presigner", None)
    if presigner is None:  # served without the lifespan: no uploads
        return None
    url = await presigner.generate_presigned_url(
        "put_object", Params={"Bucket": app.state.settings.bucket, "Key": "uploads/origin"}, ExpiresIn=60
    )
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}"


@router.get("/", include_in_schema=False)
async def page(request: Request) -> FileResponse:
    """The web page."""
    headers = await page_headers(request.app)
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=headers)


class PageFiles(StaticFiles):
    """Starlette's static files (ETag, 304, HEAD) with the page's security headers on each answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(await page_headers(scope["app"]))
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(PAGE_PREFIX, PageFiles(directory=STATIC_DIR), name="web")
