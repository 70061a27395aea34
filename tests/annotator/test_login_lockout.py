"""Brute-force limit on the login page, the admin's login and POST /api/auth/token/ (issue 20).

The settings under test are the real ones (10 failures, 60 s); the clock stands still or jumps
with time-machine instead of the test sleeping through the lockout.
"""
import re
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.contrib.auth.backends import ModelBackend
from django.utils import timezone
from rest_framework.test import APIClient

LOCKED = "Too many failed login attempts from your address. Try again in 1 minute."


@pytest.fixture
def guessed(settings, make_user):
    """The account someone guesses at (a fast hasher: the test counts attempts, not hashing time)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return make_user("ann")


def login(client, user, password, address="10.0.0.1", path="/accounts/login/"):
    return client.post(path, {"username": user.username, "password": password}, REMOTE_ADDR=address)


def test_the_defaults_are_ten_failures_and_one_minute():
    assert django_settings.DEFECTBENCH_LOGIN_FAILURE_LIMIT == 10
    assert django_settings.DEFECTBENCH_LOGIN_LOCKOUT_SECONDS == 60


def test_the_eleventh_attempt_in_a_minute_is_refused_and_the_right_password_works_after_the_lockout(client, guessed):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for attempt in range(9):
            response = login(client, guessed, f"guess-{attempt}")
            assert response.status_code == 200 and "didn't match" in response.content.decode()
        login(client, guessed, "guess-9")  # the tenth failure: the address is locked from now on
        response = login(client, guessed, guessed.raw_password)
        page = response.content.decode()
        assert response.status_code == 429 and response["Retry-After"] == "60"
        assert LOCKED in page and "didn't match" not in page
        assert 'name="username" autocomplete="username" value="ann"' in page  # the form is still there
        assert client.get("/").status_code == 302  # not logged in
        # The admin's login page says the same.
        response = login(client, guessed, guessed.raw_password, path="/admin/login/")
        assert response.status_code == 429 and LOCKED in response.content.decode()

        clock.shift(timedelta(seconds=30))  # still within the lockout, and the page says for how long
        response = login(client, guessed, guessed.raw_password)
        assert response.status_code == 429 and response["Retry-After"] == "30"
        assert "Try again in 30 seconds." in response.content.decode()
        clock.shift(timedelta(seconds=31))  # a minute after the tenth failure (refusals do not prolong it)
        response = login(client, guessed, guessed.raw_password)
        assert response.status_code == 302 and response["Location"] == "/"
        assert "ann" in client.get("/").content.decode()


def test_a_locked_out_address_does_not_lock_the_account_elsewhere(client, guessed):
    for attempt in range(11):
        login(client, guessed, f"guess-{attempt}", address="203.0.113.9")
    assert login(client, guessed, guessed.raw_password, address="203.0.113.9").status_code == 429
    response = login(client, guessed, guessed.raw_password, address="10.0.0.2")
    assert response.status_code == 302 and response["Location"] == "/"


def test_guessing_other_usernames_from_one_address_is_counted_too(client, guessed, make_user):
    others = [make_user(f"user{i}") for i in range(10)]
    for other in others:
        login(client, other, "guess")
    assert login(client, guessed, guessed.raw_password).status_code == 429


def test_refused_attempts_never_reach_the_password_check(client, guessed, monkeypatch):
    """The guessing that slowed every web process down: once locked, no password is hashed."""
    checked = []
    original = ModelBackend.authenticate

    def counting(self, request, username=None, password=None, **kwargs):
        checked.append(username)
        return original(self, request, username=username, password=password, **kwargs)

    monkeypatch.setattr(ModelBackend, "authenticate", counting)
    for attempt in range(10):
        login(client, guessed, f"guess-{attempt}")
    assert len(checked) == 10
    for attempt in range(20):
        assert login(client, guessed, f"more-{attempt}").status_code == 429
    assert len(checked) == 10


def test_behind_the_proxy_the_client_is_the_address_the_proxy_appended(client, guessed, settings):
    settings.DEFECTBENCH_CLIENT_ADDRESS_FROM_PROXY = True
    for attempt in range(10):
        # A made-up first entry changes nothing: the proxy's own entry comes last.
        client.post("/accounts/login/", {"username": "ann", "password": f"guess-{attempt}"}, REMOTE_ADDR="10.0.0.254",
                    HTTP_X_FORWARDED_FOR=f"198.51.100.{attempt}, 203.0.113.5")
    locked = client.post("/accounts/login/", {"username": "ann", "password": guessed.raw_password},
                         REMOTE_ADDR="10.0.0.254", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert locked.status_code == 429
    other = client.post("/accounts/login/", {"username": "ann", "password": guessed.raw_password},
                        REMOTE_ADDR="10.0.0.254", HTTP_X_FORWARDED_FOR="203.0.113.6")
    assert other.status_code == 302


def test_an_ipv6_client_counts_as_its_64_network(client, guessed):
    for attempt in range(10):
        login(client, guessed, f"guess-{attempt}", address=f"2001:db8:0:1::{attempt + 1:x}")
    assert login(client, guessed, guessed.raw_password, address="2001:db8:0:1:ffff::1").status_code == 429
    assert login(client, guessed, guessed.raw_password, address="2001:db8:0:2::1").status_code == 302


def test_the_token_api_refuses_the_eleventh_attempt_with_429_and_works_after_the_lockout(guessed):
    client = APIClient(REMOTE_ADDR="10.0.0.3")

    def token_request(password):
        return client.post("/api/auth/token/", {"username": "ann", "password": password}, format="json")

    with time_machine.travel(timezone.now(), tick=False) as clock:
        for attempt in range(9):
            assert token_request(f"guess-{attempt}").status_code == 400
        token_request("guess-9")
        response = token_request(guessed.raw_password)
        assert response.status_code == 429 and response["Retry-After"] == "60"
        assert response.json() == {"detail": LOCKED}
        clock.shift(timedelta(seconds=61))
        response = token_request(guessed.raw_password)
        assert response.status_code == 200
        assert client.get("/api/", HTTP_AUTHORIZATION=f"Token {response.json()['token']}").status_code == 200


def test_an_overlong_username_is_refused_before_it_is_recorded(guessed):
    response = APIClient().post("/api/auth/token/", {"username": "x" * 300, "password": "guess"}, format="json")
    assert response.status_code == 400 and "username" in response.json()


def test_the_login_page_shows_the_lockout_on_screen(browser_page, live_server, guessed):
    page = browser_page
    page.goto(f"{live_server.url}/accounts/login/")
    for attempt in range(11):
        page.fill("input[name=username]", "ann")
        page.fill("input[name=password]", f"guess-{attempt}")
        with page.expect_navigation():
            page.click("button[type=submit]")
    # "1 minute", or a few seconds less on a slow machine.
    assert re.fullmatch(r"Too many failed login attempts from your address\. Try again in (1 minute|5\d seconds)\.",
                        page.locator(".login .error").inner_text())
    assert page.locator("input[name=username]").input_value() == "ann"
