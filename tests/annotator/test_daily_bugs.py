"""Issue 12 bugs of the labelling pages, each pinned by a test."""
import pytest

from annotator.models import Image
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def world(db, tmp_path, settings, make_user):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    dataset = make_dataset(tmp_path, overlap=2, products=(("widget", "object", 3),), good_train=1)
    annotator = make_user("ann", role="annotator")
    image = Image.objects.filter(is_anomalous=True).order_by("pk").first()
    return {"dataset": dataset, "image": image, "annotator": annotator}


def test_history_names_the_product_once(client, world):
    """Paths of a multi-product folder start with the product: /history/ showed widget/widget/..."""
    image = world["image"]
    assert image.path.startswith("widget/")
    save_label(image=image, annotator=world["annotator"], background=True, category="surface")
    client.force_login(world["annotator"])
    page = client.get("/history/").content.decode()
    assert f">{image.path}</a>" in page and "widget/widget/" not in page
    image.path = image.path[len("widget/"):]  # a one-product folder: the product is added once
    assert image.display_path == f"widget/{image.path}"


def test_login_keeps_the_username_after_a_wrong_password(client, world):
    response = client.post("/accounts/login/", {"username": "ann", "password": "wrong"})
    page = response.content.decode()
    assert response.status_code == 200 and "didn't match" in page
    assert 'name="username" autocomplete="username" value="ann"' in page
    # The cursor goes to the password, the field to fix.
    assert 'type="password" autocomplete="current-password" autofocus' in page


def test_labelling_list_filters(client, world, make_user):
    from annotator.models import Image

    dataset = world["dataset"]
    product = dataset.products.get(name="widget")
    images = list(Image.objects.filter(product=product, is_anomalous=True).order_by("path"))
    me, other = world["annotator"], make_user("other")
    save_label(image=images[0], annotator=me, background=True, category="surface")
    save_label(image=images[0], annotator=other, background=True, category="structural")  # disagreement
    save_label(image=images[1], annotator=me, background=False, category="combined")
    client.force_login(me)

    def listed(query):
        page = client.get(f"/products/{product.pk}/labels/?{query}")
        assert page.status_code == 200
        return [row.image.pk for row in page.context["rows"]]

    assert listed("filter=mine") == [images[0].pk, images[1].pk]
    assert images[0].pk not in listed("filter=unlabelled") and images[2].pk in listed("filter=unlabelled")
    # blind double labelling: an annotator's "disagreement" filter is the whole list; a reviewer's works
    assert listed("filter=disagreement") == listed("filter=all")
    assert listed("filter=mine&category=combined") == [images[1].pk]
    assert listed("filter=bogus") == listed("filter=all")  # unknown filter: everything, no error
    page = client.get(f"/products/{product.pk}/labels/?filter=mine").content.decode()
    assert f"/images/{images[0].pk}/label/?scope=product&amp;from=" in page
    table = page[page.index('id="labelling-list"'):]
    assert "other" not in table and "structural" not in table  # never the other annotator's label
    client.force_login(make_user("rev", role="reviewer"))
    assert listed("filter=disagreement") == [images[0].pk]
    client.logout()
    assert client.get(f"/products/{product.pk}/labels/").status_code == 302  # login needed


def test_dataset_settings_from_the_dataset_page(client, world, make_user):
    dataset = world["dataset"]
    admin = make_user("boss", role="admin")
    reviewer = make_user("rev", role="reviewer")
    url = f"/datasets/{dataset.pk}/settings/"
    client.force_login(reviewer)
    assert client.post(url, {"label_overlap": "3"}).status_code == 403
    client.force_login(admin)
    assert 'id="dataset-settings"' in client.get(f"/datasets/{dataset.pk}/dashboard/").content.decode()
    client.post(url, {"label_overlap": "3"})  # checkbox left empty: the folder is hidden
    dataset.refresh_from_db()
    assert (dataset.label_overlap, dataset.show_defect_folder) == (3, False)
    response = client.post(url, {"label_overlap": "0", "show_defect_folder": "on"}, follow=True)
    assert "Overlap must be a whole number from 1 to 10" in response.content.decode()
    dataset.refresh_from_db()
    assert (dataset.label_overlap, dataset.show_defect_folder) == (3, False)  # a refusal changes nothing
    client.force_login(world["annotator"])
    page = client.get(f"/images/{world['image'].pk}/label/").content.decode()
    assert '"showDefectFolder": false' in page and f">{world['image'].defect_type}</span>" not in page


def test_archive_and_delete_with_a_confirmation_listing_the_loss(client, world, make_user):
    from annotator.models import Dataset, Label

    dataset = world["dataset"]
    save_label(image=world["image"], annotator=world["annotator"], background=True, category="surface")
    admin = make_user("boss", role="admin")
    client.force_login(world["annotator"])
    assert client.get(f"/datasets/{dataset.pk}/delete/").status_code == 403
    client.force_login(admin)
    client.post(f"/datasets/{dataset.pk}/archive/", {"archived": "1"})
    assert "data-dataset=\"demo\"" not in client.get("/").content.decode()
    assert "data-dataset=\"demo\"" in client.get("/?archived=1").content.decode()
    page = client.get(f"/datasets/{dataset.pk}/delete/").content.decode()
    assert "<b>1</b> labels" in page and "<b>1</b> products" in page and "benchmark runs" in page
    response = client.post(f"/datasets/{dataset.pk}/delete/", {"confirm_name": "wrong"}, follow=True)
    assert "Type the dataset&#x27;s name (demo) to confirm" in response.content.decode()
    assert Dataset.objects.filter(pk=dataset.pk).exists()
    path = world["image"].file_path
    client.post(f"/datasets/{dataset.pk}/delete/", {"confirm_name": "demo"})
    assert not Dataset.objects.filter(pk=dataset.pk).exists() and not Label.objects.exists()
    assert path.exists()  # the files stay
