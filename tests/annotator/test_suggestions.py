"""Category suggestions in the app (annotator.services.suggestions) on the synthetic demo dataset:
the setting, the cached features, the beat task's fit, what the workspace gets, what a label
records, and the dashboard's figures."""
import pytest

from annotator.models import CategorySuggester, Image, ImageFeatures, Label, LabelHistory, NearestReference
from annotator.services import dataset_settings, queue, statistics, suggestions
from annotator.services.demo import DEFECTS
from annotator.services.labels import save_label
from annotator.services.review import decide
from annotator.services.workspace import workspace_data

pytestmark = pytest.mark.django_db


def widget_images(dataset):
    return list(Image.objects.filter(product__dataset=dataset, product__name="widget", split="test",
                                     is_anomalous=True).select_related("product__dataset").order_by("defect_type", "path"))


def truth(image):  # the demo's intended category (tests only: the app never reads defect_type for this)
    return DEFECTS["widget"][image.defect_type]


@pytest.fixture
def suggesting(demo_dataset):
    demo_dataset.suggest_categories = True
    demo_dataset.save()
    return demo_dataset


def label_some(images, user, n):
    for image in images[:n]:
        save_label(image=image, annotator=user, background=True, category=truth(image))


def spread(images, n_per_type):
    """``n_per_type`` images of each defect type of the widget, then the rest."""
    by_type = {}
    for image in images:
        by_type.setdefault(image.defect_type, []).append(image)
    first = [image for group in by_type.values() for image in group[:n_per_type]]
    return first + [image for image in images if image not in first]


def test_off_by_default_and_nothing_is_computed(demo_dataset, annotator_account):
    assert demo_dataset.suggest_categories is False
    images = widget_images(demo_dataset)
    label_some(images, annotator_account, 8)
    assert suggestions.refresh() == 0
    assert not ImageFeatures.objects.exists() and not CategorySuggester.objects.exists()
    data = workspace_data(images[-1], annotator_account)
    assert data["suggestion"] is None and data["suggestion_note"] == ""


def test_too_few_labels_give_no_suggestion_and_say_why(suggesting, annotator_account):
    images = spread(widget_images(suggesting), 1)
    label_some(images, annotator_account, 4)  # four labels of four categories: one short
    suggestions.refresh()
    suggester = CategorySuggester.objects.get(dataset=suggesting)
    assert suggester.model is None and suggester.n_labels == 4
    data = workspace_data(images[-1], annotator_account)
    assert data["suggestion"] is None
    assert "5 labels of at least 2 categories" in data["suggestion_note"]


def test_the_beat_task_computes_features_once_and_fits_when_labels_change(suggesting, annotator_account,
                                                                          make_user):
    images = spread(widget_images(suggesting), 2)
    label_some(images, annotator_account, 8)  # two of each category
    computed = suggestions.refresh()
    # The labelled images first, then the open ones (widget's and fabric's): all 32 fit in one run.
    assert computed == 32 and ImageFeatures.objects.filter(vector__isnull=False).count() == 32
    suggester = CategorySuggester.objects.get(dataset=suggesting)
    assert suggester.n_labels == 8 and suggester.model["classes"] == sorted(set(map(truth, images)))
    fitted_at = suggester.fitted_at

    # Nothing changed: nothing recomputed, no refit.
    assert suggestions.refresh() == 0
    assert CategorySuggester.objects.get(dataset=suggesting).fitted_at == fitted_at
    # A new label: a refit (features were already there).
    save_label(image=images[8], annotator=annotator_account, background=True, category=truth(images[8]))
    assert suggestions.refresh() == 0
    suggester = CategorySuggester.objects.get(dataset=suggesting)
    assert suggester.fitted_at > fitted_at and suggester.n_labels == 9

    # Images the two annotators disagree on teach nothing until a reviewer decides.
    other = make_user("bob")
    save_label(image=images[0], annotator=other, background=True, category="surface"
               if truth(images[0]) != "surface" else "structural")
    suggestions.refresh()
    assert CategorySuggester.objects.get(dataset=suggesting).n_labels == 8
    decide(image=images[0], reviewer=make_user("rita2", role="reviewer"), background=True, category=truth(images[0]))
    suggestions.refresh()
    assert CategorySuggester.objects.get(dataset=suggesting).n_labels == 9


def test_the_workspace_gets_a_suggestion_with_two_reads(suggesting, annotator_account, django_assert_num_queries):
    images = spread(widget_images(suggesting), 2)
    label_some(images, annotator_account, 8)
    suggestions.refresh()
    open_images = images[8:]
    hits = 0
    for image in open_images:
        data = workspace_data(image, annotator_account)
        assert data["suggestion"] is not None and data["suggestion_note"] == ""
        assert 0 < data["suggestion"].probability <= 1 and data["suggestion"].n_labels == 8
        hits += data["suggestion"].category == truth(image)
    # Distinct synthetic defects: the suggestion gets most of the unseen ones right.
    assert hits >= 6, hits
    reference = workspace_data(open_images[0], annotator_account)["references"][0]
    with django_assert_num_queries(2):  # the suggester's row and the image's features
        suggestions.suggestion_for(open_images[0], reference)
    # None for an image I labelled: my label is shown instead.
    assert workspace_data(images[0], annotator_account)["suggestion"] is None


def test_features_of_another_reference_are_not_used_and_are_recomputed(suggesting, annotator_account):
    images = spread(widget_images(suggesting), 2)
    label_some(images, annotator_account, 8)
    suggestions.refresh()
    image = images[10]
    assert workspace_data(image, annotator_account)["suggestion"] is not None
    # The nearest reference is computed now, and it is another training image than the fallback.
    other = Image.objects.filter(product=image.product, split="train").order_by("-path").first()
    NearestReference.objects.create(image=image, reference=other, distance=0.1)
    assert workspace_data(image, annotator_account)["suggestion"] is None  # stale: not shown
    assert suggestions.refresh() == 1  # only that one
    assert ImageFeatures.objects.get(image=image).reference == other
    assert workspace_data(image, annotator_account)["suggestion"] is not None


def test_a_label_records_the_suggestion_and_whether_it_was_taken(suggesting, annotator_account, make_user):
    images = spread(widget_images(suggesting), 2)
    label_some(images, annotator_account, 8)
    taken, changed = images[8], images[9]
    label = queue.submit_label(user=annotator_account, image=taken, background=True, category="surface",
                               suggested_category="surface")
    assert (label.suggested_category, label.suggestion_taken) == ("surface", True)
    label = queue.submit_label(user=annotator_account, image=changed, background=True, category="structural",
                               suggested_category="contamination")
    assert (label.suggested_category, label.suggestion_taken) == ("contamination", False)
    created = LabelHistory.objects.filter(image=changed, action="created").get()
    assert created.suggested_category == "contamination"
    # A correction keeps what the first submission was shown and did.
    label = queue.submit_label(user=annotator_account, image=changed, background=True, category="contamination",
                               suggested_category="surface")
    assert (label.suggested_category, label.suggestion_taken) == ("contamination", False)
    assert LabelHistory.objects.filter(image=changed, action="updated").get().suggested_category == ""
    # Labels given without one record none.
    assert Label.objects.filter(image=images[0]).get().suggested_category == ""
    # A dataset that offers none records none, whatever a client claims.
    suggesting.suggest_categories = False
    suggesting.save()
    fresh = Image.objects.select_related("product__dataset").get(pk=images[10].pk)  # as a request reads it
    label = queue.submit_label(user=annotator_account, image=fresh, background=True, category="surface",
                               suggested_category="surface")
    assert (label.suggested_category, label.suggestion_taken) == ("", False)
    with pytest.raises(ValueError, match="Unknown suggested category"):
        save_label(image=images[11], annotator=annotator_account, background=True, category="surface",
                   suggested_category="bogus")


def test_statistics_report_taken_share_accuracy_and_agreement_with_and_without(suggesting, make_user):
    images = widget_images(suggesting)
    ann, bob, cat, rita = make_user("ann"), make_user("bob"), make_user("cat"), make_user("rita", role="reviewer")
    # Image 0: both shown "surface", both took it, final surface (agree): suggestion right.
    for user in (ann, bob):
        save_label(image=images[0], annotator=user, background=True, category="surface", suggested_category="surface")
    # Image 1: both shown "structural"; one took it, the other chose surface; reviewer: surface.
    save_label(image=images[1], annotator=ann, background=True, category="structural", suggested_category="structural")
    save_label(image=images[1], annotator=bob, background=True, category="surface", suggested_category="structural")
    decide(image=images[1], reviewer=rita, background=True, category="surface")
    # Image 2: neither shown one; they disagree, undecided.
    save_label(image=images[2], annotator=ann, background=True, category="surface")
    save_label(image=images[2], annotator=cat, background=True, category="combined")
    # Image 3: neither shown one; they agree.
    save_label(image=images[3], annotator=bob, background=True, category="combined")
    save_label(image=images[3], annotator=cat, background=True, category="combined")

    figures = statistics.compute(suggesting)["suggestions"]
    assert (figures["shown"], figures["taken"], figures["taken_share"]) == (4, 3, 0.75)
    assert (figures["judged"], figures["correct"], figures["accuracy"]) == (4, 2, 0.5)
    assert figures["with_final"]["shown"] == {"labels": 4, "agree": 3, "agreement": 0.75}
    assert figures["with_final"]["not_shown"] == {"labels": 2, "agree": 2, "agreement": 1.0}
    assert figures["pairs"]["both_shown"] == {"pairs": 2, "agree": 1, "agreement": 0.5}
    assert figures["pairs"]["neither_shown"] == {"pairs": 2, "agree": 1, "agreement": 0.5}
    assert figures["pairs"]["one_shown"] == {"pairs": 0, "agree": 0, "agreement": None}
    assert figures["suggested_categories"] == {"surface": 2, "structural": 2}


def test_turning_it_on_is_an_admin_setting(demo_dataset, admin_account, annotator_account):
    with pytest.raises(PermissionError):
        dataset_settings.update_settings(demo_dataset, annotator_account, label_overlap=1, show_defect_folder=True,
                                         suggest_categories=True)
    dataset_settings.update_settings(demo_dataset, admin_account, label_overlap=1, show_defect_folder=True,
                                     suggest_categories=True)
    demo_dataset.refresh_from_db()
    assert demo_dataset.suggest_categories
    # Left out: unchanged.
    dataset_settings.update_settings(demo_dataset, admin_account, label_overlap=1, show_defect_folder=True)
    demo_dataset.refresh_from_db()
    assert demo_dataset.suggest_categories


def test_the_dashboard_shows_the_suggestions_record(client, suggesting, reviewer_account, make_user):
    images = widget_images(suggesting)
    ann = make_user("ann")
    save_label(image=images[0], annotator=ann, background=True, category="surface", suggested_category="surface")
    save_label(image=images[1], annotator=ann, background=True, category="structural", suggested_category="surface")
    client.force_login(reviewer_account)
    page = client.get(f"/datasets/{suggesting.pk}/dashboard/", follow=True).content.decode()
    assert "Category suggestions" in page
    assert "Labels shown a suggestion</th><td>2</td>" in page
    assert "Taken (submitted as suggested)</th><td>1 · 50%" in page
    assert "Suggestion right (against the final label)</th><td>1 / 2 · 50%" in page


def test_the_api_refuses_an_unknown_suggested_category(client, suggesting, annotator_account):
    image = widget_images(suggesting)[0]
    client.force_login(annotator_account)
    response = client.post("/api/labels/", {"image": image.pk, "background": True, "category": "surface",
                                            "suggested_category": "bogus"}, content_type="application/json")
    assert response.status_code == 400 and "suggested_category" in response.json()
    assert not Label.objects.exists()
