"""Passwords set through the admin's forms pass Django's full set of validators (issue 20)."""
import pytest

from annotator.models import User

pytestmark = pytest.mark.django_db

WEAK = {
    "password": "This password is too common.",
    "12345678": "This password is entirely numeric.",
    "short1": "This password is too short.",
    "newcomer-1": "The password is too similar to the username.",
}


@pytest.fixture
def admin_client(client, admin_account):
    client.force_login(admin_account)
    return client


@pytest.mark.parametrize("password", WEAK)
def test_adding_a_user_with_a_weak_password_is_refused(admin_client, password):
    response = admin_client.post("/admin/annotator/user/add/", {
        "username": "newcomer", "password1": password, "password2": password, "usable_password": "true",
        "role": "annotator",
    })
    assert response.status_code == 200 and WEAK[password] in response.content.decode()
    assert not User.objects.filter(username="newcomer").exists()


def test_adding_a_user_with_a_strong_password_works(admin_client):
    response = admin_client.post("/admin/annotator/user/add/", {
        "username": "newcomer", "password1": "violet-harbour-tram", "password2": "violet-harbour-tram",
        "usable_password": "true", "role": "annotator",
    })
    assert response.status_code == 302
    assert User.objects.get(username="newcomer").check_password("violet-harbour-tram")


@pytest.mark.parametrize("password", ["password", "12345678"])
def test_changing_a_password_to_a_weak_one_is_refused(admin_client, annotator_account, password):
    response = admin_client.post(f"/admin/annotator/user/{annotator_account.pk}/password/", {
        "password1": password, "password2": password, "usable_password": "true",
    })
    assert response.status_code == 200 and WEAK[password] in response.content.decode()
    annotator_account.refresh_from_db()
    assert annotator_account.check_password(annotator_account.raw_password)


def test_ones_own_password_change_refuses_a_weak_one(admin_client, admin_account):
    response = admin_client.post("/admin/password_change/", {
        "old_password": admin_account.raw_password, "new_password1": "12345678", "new_password2": "12345678",
    })
    assert response.status_code == 200 and WEAK["12345678"] in response.content.decode()
