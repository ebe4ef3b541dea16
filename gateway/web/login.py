"""``/login`` and ``/logout``: a web session from an API key.

The form takes a key; a valid one gets a cookie (``lh_session``: ``HttpOnly``,
``SameSite=Strict``, ``Secure`` over HTTPS) holding a signed session that names the key, not
the key itself (:meth:`lakehouse.platform.auth.KeyStore.session`); it lasts
``auth.session_ttl`` and ends when the key is revoked. ``next`` returns to the page that asked
(only a path of this gateway). Without keys configured there is nothing to log in to.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.auth import COOKIE
from gateway.web.pages import page

router = APIRouter(include_in_schema=False)


def local_path(target: str) -> str:
    """``target`` when it is a path of this gateway, else ``/`` (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return page(request, "login.html", {"next": local_path(next), "error": None})


@router.post("/login")
async def login(
    request: Request, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
) -> Response:
    st = request.app.state.lh
    found = st.keys.verify(key) if key else None
    if found is None:
        ctx = {"next": local_path(next), "error": "That key is not valid."}
        return page(request, "login.html", ctx, status=401)
    out = RedirectResponse(local_path(next), status_code=303)
    out.set_cookie(
        COOKIE,
        st.keys.session(found, st.settings.auth.session_ttl),
        max_age=int(st.settings.auth.session_ttl),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return out


@router.post("/logout")
async def logout() -> Response:
    out = RedirectResponse("/login", status_code=303)
    out.delete_cookie(COOKIE, path="/")
    return out
