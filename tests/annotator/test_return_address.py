"""Issue 20: the workspace's ``from=`` (where a new label returns to) never leads off the site."""
import json
from urllib.parse import quote, urljoin, urlsplit

import pytest

from annotator.models import Image
from tests.api.labelling_factory import make_dataset

# Each of these left the site after a label was submitted: the browser reads "\" as "/" and
# "//host" as another host; "/%2F%2F..." arrives decoded as "///...".
OFF_SITE = ["//evil.example", "/\\evil.example", "/%2F%2Fevil.example", "https://evil.example",
            "/\\/evil.example", "///evil.example", "http://evil.example/products/1/labels/",
            "javascript:alert(1)", " //evil.example"]


@pytest.fixture
def image(db, tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    make_dataset(tmp_path, products=(("widget", "object", 2),), good_train=1)
    return Image.objects.filter(is_anomalous=True).order_by("pk").first()


def return_address(client, image, query: str) -> str:
    page = client.get(f"/images/{image.pk}/label/?scope=product&{query}")
    assert page.status_code == 200
    html = page.content.decode()
    start = html.index('<script id="workspace-config" type="application/json">') + len(
        '<script id="workspace-config" type="application/json">')
    return json.loads(html[start:html.index("</script>", start)])["returnTo"]


def lands_on(return_to: str, page_url: str = "http://testserver/images/1/label/") -> str:
    """The host a browser ends on after ``location.href = return_to`` ("\\" reads as "/" there)."""
    return urlsplit(urljoin(page_url, return_to.strip().replace("\\", "/"))).netloc


@pytest.mark.parametrize("target", OFF_SITE)
@pytest.mark.parametrize("encode", [False, True], ids=["raw", "quoted"])
def test_an_off_site_return_address_is_never_followed(client, image, admin_account, target, encode):
    client.force_login(admin_account)
    return_to = return_address(client, image, "from=" + (quote(target, safe="") if encode else target))
    assert lands_on(return_to) == "testserver", return_to
    if not encode or "%" not in target:
        # Refused: the workspace goes on with the next image instead. (Quoted, "/%2F%2F..." is the
        # path "/%2F%2Fevil.example" of this site: a browser keeps %2F as it is.)
        assert return_to == ""


def test_the_labelling_list_stays_the_return_address(client, image, admin_account):
    client.force_login(admin_account)
    here = f"/products/{image.product_id}/labels/?filter=mine&category=surface"
    assert return_address(client, image, "from=" + quote(here, safe="")) == here


def test_over_https_an_http_return_address_is_refused(client, image, admin_account):
    client.force_login(admin_account)
    page = client.get(f"/images/{image.pk}/label/?from=" + quote("http://testserver/", safe=""), secure=True)
    assert b'"returnTo": ""' in page.content
