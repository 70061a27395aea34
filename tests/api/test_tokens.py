"""API tokens end with a password change and, when a maximum age is set, with age (issue 20)."""
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.hashers import make_password
from django.utils import timezone
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def api_status(client, token):
    return client.get("/api/", HTTP_AUTHORIZATION=f"Token {token.key}").status_code


def test_a_password_change_revokes_the_users_tokens(client, annotator_account):
    token = Token.objects.create(user=annotator_account)
    annotator_account.set_password("violet-harbour-tram")
    annotator_account.save()
    assert not Token.objects.filter(user=annotator_account).exists()
    assert api_status(client, token) == 401


def test_a_password_changed_in_the_admin_revokes_the_token(client, admin_account, annotator_account):
    token = Token.objects.create(user=annotator_account)
    client.force_login(admin_account)
    response = client.post(f"/admin/annotator/user/{annotator_account.pk}/password/", {
        "password1": "violet-harbour-tram", "password2": "violet-harbour-tram", "usable_password": "true",
    })
    assert response.status_code == 302
    assert api_status(client, token) == 401


def test_other_changes_and_a_hash_upgrade_at_login_keep_the_token(client, annotator_account, settings):
    token = Token.objects.create(user=annotator_account)
    annotator_account.role = "reviewer"
    annotator_account.save()
    # The stored hash is MD5's; with PBKDF2 preferred, the login re-hashes the same password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    annotator_account.password = make_password(annotator_account.raw_password, hasher="md5")
    annotator_account.save()
    response = client.post("/accounts/login/", {"username": annotator_account.username,
                                                "password": annotator_account.raw_password})
    assert response.status_code == 302
    annotator_account.refresh_from_db()
    assert annotator_account.password.startswith("pbkdf2_")
    assert api_status(client, token) == 200


def test_an_expired_token_gets_401_token_expired(client, annotator_account, settings):
    settings.DEFECTBENCH_API_TOKEN_MAX_AGE_SECONDS = 3600
    token = Token.objects.create(user=annotator_account)
    assert api_status(client, token) == 200
    with time_machine.travel(timezone.now() + timedelta(seconds=3601)):
        response = client.get("/api/", HTTP_AUTHORIZATION=f"Token {token.key}")
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
        assert response.json()["detail"].startswith("Token expired")
        # The token page says so; a password login hands out a new token that works.
        client.force_login(annotator_account)
        assert "This token expired on" in client.get("/accounts/api-token/").content.decode()
        client.logout()
        new = client.post("/api/auth/token/", {"username": annotator_account.username,
                                               "password": annotator_account.raw_password}).json()["token"]
        assert new != token.key
        assert client.get("/api/", HTTP_AUTHORIZATION=f"Token {new}").status_code == 200


def test_without_a_maximum_age_tokens_do_not_expire(client, annotator_account):
    token = Token.objects.create(user=annotator_account)
    with time_machine.travel(timezone.now() + timedelta(days=3650)):
        assert api_status(client, token) == 200
