"""Every page and file needs login."""
import pytest


@pytest.mark.parametrize("url", ["/", "/products/1/", "/files/images/1/image", "/files/images/1/mask", "/admin/",
                                 "/benchmarks/products/1/inspect/", "/benchmarks/inspections/1/",
                                 "/benchmarks/inspections/1/results.csv", "/benchmarks/inspections/1/files/00000_map.png"])
def test_anonymous_visitors_are_sent_to_login(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_api_refuses_anonymous_without_redirect(client, db):
    response = client.get("/api/schema/")
    assert response.status_code in (401, 403)


def test_login_page_is_public_and_login_shows_home(client, annotator_account):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post(
        "/accounts/login/", {"username": annotator_account.username, "password": annotator_account.raw_password}, follow=True
    )
    assert response.status_code == 200
    assert b"Datasets" in response.content
    assert annotator_account.username.encode() in response.content
