"""Serve the page: `/` is index.html, `/web/*` its scripts and styles, each with SECURITY_HEADERS."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.web import PAGE_PREFIX, SECURITY_HEADERS, STATIC_DIR

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The web page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


class PageFiles(StaticFiles):
    """Starlette's static files (ETag, 304, HEAD) with the page's security headers on each answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(PAGE_PREFIX, PageFiles(directory=STATIC_DIR), name="web")
