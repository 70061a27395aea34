"""API onboarding (issue 12): the token page, 401 with WWW-Authenticate, the /api/ entry points."""
import pytest
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def test_token_page_creates_copies_and_revokes(client, annotator_account):
    client.force_login(annotator_account)
    assert "You have no API token" in client.get("/accounts/api-token/").content.decode()
    # as a person does it: the nav link, the button, and the page the redirect lands on
    home = client.get("/").content.decode()
    assert 'href="/accounts/api-token/"' in home
    landed = client.post("/accounts/api-token/", {"action": "create"}, follow=True)
    assert landed.redirect_chain[-1][0] == "/accounts/api-token/"
    key = Token.objects.get(user=annotator_account).key
    assert landed.status_code == 200 and f'value="{key}"' in landed.content.decode()
    page = client.get("/accounts/api-token/").content.decode()
    assert f'value="{key}"' in page and 'id="token-copy"' in page and f"Token {key}" in page
    client.post("/accounts/api-token/", {"action": "create"})
    assert Token.objects.get(user=annotator_account).key != key  # replaced: the old one is dead
    client.post("/accounts/api-token/", {"action": "revoke"})
    assert not Token.objects.filter(user=annotator_account).exists()
    client.logout()
    assert client.get("/accounts/api-token/").status_code == 302


def test_missing_or_bad_token_gets_401_with_www_authenticate_and_root_lists_entry_points(client, annotator_account):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Token not-a-real-token"}):
        response = client.get("/api/", **headers)
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Token", headers
        assert client.get("/api/datasets/", **headers).status_code == 401
    token = Token.objects.create(user=annotator_account)
    body = client.get("/api/", HTTP_AUTHORIZATION=f"Token {token.key}").json()
    assert body["datasets"].endswith("/api/datasets/") and body["benchmark_runs"].endswith("/api/benchmarks/runs/")
    assert client.get(body["datasets"], HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 200
