"""Issue 20: a Content-Security-Policy on every page, which the app's own pages satisfy."""
import re
from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parents[2] / "frontend" / "templates"


def policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.request['PATH_INFO']}"
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/benchmarks/new/", "/api/docs/", "/admin/", "/api/"])
def test_every_page_allows_scripts_from_the_site_only(client, admin_account, path):
    client.force_login(admin_account)
    response = client.get(path, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    directives = policy(response)
    assert directives["script-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"] and directives["form-action"] == ["'self'"]
    assert set(directives["img-src"]) == {"'self'", "data:", "blob:"}
    header = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header


def test_the_login_page_has_the_policy_before_login(client):
    assert policy(client.get("/accounts/login/"))["script-src"] == ["'self'"]


@pytest.mark.django_db
def test_swagger_loads_its_init_script_from_the_site(client, admin_account):
    client.force_login(admin_account)
    html = client.get("/api/docs/").content.decode()
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert inline == []
    assert "<style" not in html
    script_url = re.search(r'<script src="([^"]*script=[^"]*)"', html).group(1).replace("&amp;", "&")
    script = client.get(script_url)
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content


@pytest.mark.parametrize("template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_template_has_inline_script_handlers_or_styles(template):
    html = re.sub(r"\{#.*?#\}", "", template.read_text())  # template comments are never sent
    assert not re.findall(r"<script(?![^>]*\b(src=|type=\"application/json\"))[^>]*>", html), "inline <script>"
    assert not re.findall(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.findall(r"\sstyle\s*=", html), "style= attribute"
    assert "<style" not in html
    assert "javascript:" not in html
