"""The labelling queue: overlap, claims, timeouts, skips, and many annotators at once."""
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from annotator.models import Claim, Image, Label, LabelHistory, Skip
from annotator.services import queue
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def dataset(db, tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    return make_dataset(tmp_path)


def label_all(user, dataset, category="structural"):
    done = []
    while (image := queue.next_image(user, dataset=dataset)) is not None:
        queue.submit_label(user=user, image=image, background=True, category=category)
        done.append(image.pk)
    return done


def test_only_anomalous_test_images_are_handed_out(dataset, make_user):
    user = make_user("u1")
    done = label_all(user, dataset)
    anomalous = set(Image.objects.filter(split="test", is_anomalous=True).values_list("pk", flat=True))
    assert set(done) == anomalous and len(done) == 7


def test_overlap_one_gives_each_image_to_one_annotator(dataset, make_user):
    first, second = make_user("u1"), make_user("u2")
    image = queue.next_image(first, dataset=dataset)
    # A fresh claim holds the image: the second annotator gets another one.
    other = queue.next_image(second, dataset=dataset)
    assert other.pk != image.pk
    # Asking again returns the same claimed image (reloading never claims a second one).
    assert queue.next_image(first, dataset=dataset).pk == image.pk
    assert Claim.objects.filter(annotator=first).count() == 1
    queue.submit_label(user=first, image=image, background=True, category="surface")
    assert not Claim.objects.filter(annotator=first).exists()
    # The second annotator may not add a label to an image that has all it needs.
    with pytest.raises(queue.QueueError):
        queue.submit_label(user=second, image=image, background=True, category="surface")
    # ...but the first may change theirs.
    queue.submit_label(user=first, image=image, background=False, category="combined")
    assert Label.objects.get(image=image).category == "combined"


def test_overlap_two_needs_two_distinct_annotators(dataset, make_user):
    dataset.label_overlap = 2
    dataset.save()
    a, b, c = make_user("a"), make_user("b"), make_user("c")
    assert len(label_all(a, dataset)) == 7
    assert len(label_all(b, dataset)) == 7
    assert label_all(c, dataset) == []
    assert Label.objects.count() == 14
    assert all(image.labels.count() == 2 for image in Image.objects.filter(is_anomalous=True))


def test_abandoned_claim_is_released_after_timeout(dataset, make_user, settings):
    settings.DEFECTBENCH_CLAIM_TIMEOUT_SECONDS = 60
    first, second = make_user("u1"), make_user("u2")
    product = dataset.products.get(name="fabric")
    images = list(queue.labellable_images(product=product))
    claimed = [queue.next_image(first, product=product) for _ in range(1)]
    for image in images:
        if image.pk != claimed[0].pk:
            queue.submit_label(user=second, image=image, background=False, category="surface")
    # Everything else is labelled; the claimed image is held.
    assert queue.next_image(second, product=product) is None
    Claim.objects.filter(annotator=first).update(claimed_at=timezone.now() - timedelta(seconds=61))
    assert queue.next_image(second, product=product).pk == claimed[0].pk
    # The first annotator comes back too late: the image is now the second one's.
    assert queue.next_image(first, product=product) is None


def test_skip_is_not_handed_back_immediately(dataset, make_user):
    user = make_user("u1")
    product = dataset.products.get(name="fabric")
    first = queue.next_image(user, product=product)
    queue.skip_image(user, first)
    assert Skip.objects.filter(annotator=user, image=first).exists()
    second = queue.next_image(user, product=product)
    assert second.pk != first.pk
    queue.submit_label(user=user, image=second, background=False, category="surface")
    third = queue.next_image(user, product=product)
    assert third.pk not in (first.pk, second.pk)
    queue.submit_label(user=user, image=third, background=False, category="surface")
    # Only the skipped image is left: now it comes back.
    assert queue.next_image(user, product=product).pk == first.pk


def test_progress(dataset, make_user):
    user, other = make_user("u1"), make_user("u2")
    product = dataset.products.get(name="widget")
    assert queue.user_progress(user, product).as_dict() == {"done": 0, "total": 4, "percent": 0}
    image = queue.next_image(user, product=product)
    queue.submit_label(user=user, image=image, background=True, category="surface")
    queue.next_image(other, product=product)  # other claims one
    assert queue.user_progress(user, product).as_dict() == {"done": 1, "total": 3, "percent": 33}
    assert queue.product_progress(product).as_dict() == {"done": 1, "total": 4, "percent": 25}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overlap", [1, 2])
def test_eight_annotators_in_parallel(tmp_path, settings, make_user, overlap):
    """8 threads, each with its own connection, claim and submit until nothing is left."""
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, overlap=overlap,
                           products=(("widget", "object", 14), ("fabric", "texture", 10)))
    users = [make_user(f"par{i}") for i in range(8)]
    results: dict[str, list[int]] = {u.username: [] for u in users}
    errors = []
    start = threading.Barrier(len(users))

    def work(user):
        try:
            start.wait()
            while (image := queue.next_image(user, dataset=dataset)) is not None:
                queue.submit_label(user=user, image=image, background=bool(image.pk % 2),
                                   category="structural")
                results[user.username].append(image.pk)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    anomalous = set(Image.objects.filter(split="test", is_anomalous=True).values_list("pk", flat=True))
    assert len(anomalous) == 24
    # No label lost: every submission is stored; nobody labelled an image twice.
    submitted = [(name, pk) for name, pks in results.items() for pk in pks]
    assert len(submitted) == len(set(submitted)) == len(anomalous) * overlap
    stored = set(Label.objects.values_list("annotator__username", "image_id"))
    assert stored == set(submitted)
    # Each image labelled by exactly ``overlap`` distinct annotators, never more.
    for pk in anomalous:
        assert Label.objects.filter(image_id=pk).count() == overlap
    assert LabelHistory.objects.count() == len(submitted)
    assert connection.vendor in ("sqlite", "postgresql")


@pytest.mark.django_db(transaction=True)
def test_parallel_next_image_calls_of_one_user_hold_one_claim(tmp_path, settings, make_user):
    """The browser fires next-image twice (double click, two tabs): still one image held."""
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, products=(("widget", "object", 12),))
    user = make_user("eager")
    got, errors = [], []
    start = threading.Barrier(4)

    def work():
        try:
            start.wait()
            got.append(queue.next_image(user, dataset=dataset).pk)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert Claim.objects.filter(annotator=user).count() == 1
    assert len(set(got)) == 1


def test_a_new_claim_elsewhere_replaces_the_old_one(dataset, make_user):
    user = make_user("u1")
    widget, fabric = dataset.products.get(name="widget"), dataset.products.get(name="fabric")
    first = queue.next_image(user, product=widget)
    second = queue.next_image(user, product=fabric)
    assert first.pk != second.pk
    assert list(Claim.objects.filter(annotator=user).values_list("image_id", flat=True)) == [second.pk]


def test_a_product_of_another_dataset_is_refused(dataset, make_user, tmp_path):
    other = make_dataset(tmp_path, name="other", products=(("gizmo", "object", 2),))
    user = make_user("u1")
    with pytest.raises(queue.QueueError):
        queue.next_image(user, dataset=dataset, product=other.products.get())
    assert not Claim.objects.exists()


def test_train_and_good_images_cannot_be_skipped(dataset, make_user):
    user = make_user("u1")
    for image in Image.objects.exclude(split="test", is_anomalous=True):
        with pytest.raises(queue.QueueError):
            queue.skip_image(user, image)
    assert not Skip.objects.exists()


def test_overlap_change_reopens_labelled_images(dataset, make_user):
    a, b = make_user("a"), make_user("b")
    assert len(label_all(a, dataset)) == 7
    assert label_all(b, dataset) == []
    dataset.label_overlap = 2
    dataset.save()
    assert len(label_all(b, dataset)) == 7
    assert Image.objects.filter(is_anomalous=True, needs_labels=True).count() == 0


def test_progress_counters_match_a_recount_after_labels_come_and_go(dataset, make_user):
    import random

    from annotator.models import AnnotatorProgress
    from annotator.services.labels import delete_label, save_label

    dataset.label_overlap = 2
    dataset.save()
    users = [make_user(f"c{i}") for i in range(3)]
    images = list(queue.labellable_images(dataset=dataset))
    rng = random.Random(5)
    for _ in range(60):
        user, image = rng.choice(users), rng.choice(images)
        label = Label.objects.filter(image=image, annotator=user).first()
        if label is not None and rng.random() < 0.4:
            delete_label(label=label, changed_by=user)
        elif label is not None or Label.objects.filter(image=image).count() < 2:
            save_label(image=image, annotator=user, background=True, category=rng.choice(["surface", "combined"]))
    for user in users:
        for product in dataset.products.all():
            mine = Label.objects.filter(annotator=user, image__product=product)
            row = AnnotatorProgress.objects.filter(annotator=user, product=product).first()
            assert (row.done if row else 0) == mine.count()
            assert (row.waiting if row else 0) == mine.filter(image__needs_labels=True).count()
            progress = queue.user_progress(user, product)
            open_now = sum(
                1 for image in queue.labellable_images(product=product)
                if not image.labels.filter(annotator=user).exists() and image.labels.count() < 2
            )
            assert progress.as_dict()["total"] == mine.count() + open_now


@pytest.mark.django_db(transaction=True)
def test_an_image_being_labelled_holds_up_no_other_image_of_its_product(tmp_path, settings, make_user):
    """While one annotator's submit holds its image, others of the same product get and submit
    theirs at once (the lock covered the whole product row before: everyone queued behind it)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL only (SQLite serialises all queue transactions by design)")
    from django.db import transaction

    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    dataset = make_dataset(tmp_path, products=(("widget", "object", 6),))
    holder, other = make_user("holder"), make_user("other")
    held = queue.next_image(holder, dataset=dataset)
    locked, release, errors = threading.Event(), threading.Event(), []

    def hold():
        try:
            with transaction.atomic():
                assert queue._lock_image(held.pk, skip_locked=False) is not None
                locked.set()
                release.wait(timeout=30)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(timeout=30)
        with connection.cursor() as cursor:  # a wait on the held lock fails the test instead of hanging
            cursor.execute("SET lock_timeout = '3s'")
        image = queue.next_image(other, dataset=dataset)
        assert image is not None and image.pk != held.pk
        queue.submit_label(user=other, image=image, background=True, category="surface")
        assert Label.objects.filter(image=image, annotator=other).exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
        release.set()
        thread.join(timeout=30)
    assert not errors, errors


def test_a_stray_short_of_labels_count_is_recounted_not_shown(dataset, make_user):
    """Redis' INCR can recreate an expired count as a bare delta (no expiry): without its
    freshness marker such a value is recounted, so an annotator's total never goes wrong."""
    from django.core.cache import cache

    user = make_user("u1")
    product = dataset.products.get(name="widget")
    assert queue.user_progress(user, product).as_dict() == {"done": 0, "total": 4, "percent": 0}
    cache.delete(queue._short_key(product.pk) + ":fresh")
    cache.set(queue._short_key(product.pk), -1, None)  # what the race leaves behind
    assert queue.user_progress(user, product).as_dict() == {"done": 0, "total": 4, "percent": 0}
    image = queue.next_image(user, product=product)
    queue.submit_label(user=user, image=image, background=True, category="surface")
    assert queue.user_progress(user, product).as_dict() == {"done": 1, "total": 4, "percent": 25}


def test_an_overlap_change_interrupted_half_way_changes_nothing(dataset, make_user, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    """A database restart between the images' flags and the annotators' counters used to leave the
    new overlap saved and every counter at 0 done, for good."""
    from django.db import OperationalError

    from annotator.models import AnnotatorProgress
    from annotator.services import dataset_settings

    admin, a, b = make_user("boss", role="admin"), make_user("a"), make_user("b")
    product = dataset.products.get(name="widget")
    images = list(queue.labellable_images(product=product))
    for image in images[:3]:
        queue.submit_label(user=a, image=image, background=True, category="surface")
    queue.submit_label(user=b, image=images[3], background=True, category="surface")

    def figures():
        return ([queue.user_progress(user, product).as_dict() for user in (a, b)],
                queue.product_progress(product).as_dict(),
                sorted(AnnotatorProgress.objects.values_list("annotator_id", "product_id", "done", "waiting")),
                sorted(Image.objects.values_list("pk", "needs_labels")))

    before = figures()
    assert before[0] == [{"done": 3, "total": 3, "percent": 100}, {"done": 1, "total": 1, "percent": 100}]

    def restart(*args, **kwargs):  # the second step: the recounted progress rows are written back
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(AnnotatorProgress.objects, "bulk_create", restart)
    with pytest.raises(OperationalError):
        dataset_settings.update_settings(dataset, admin, label_overlap=2, show_defect_folder=True)
    dataset.refresh_from_db()
    assert dataset.label_overlap == 1
    assert figures() == before  # the flags, the counters and what annotators see: as they were

    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):  # as when the change commits
        dataset_settings.update_settings(dataset, admin, label_overlap=2, show_defect_folder=True)
    # Right at once: no progress figure cached before the change is shown after it.
    users, whole, _, _ = figures()
    assert users == [{"done": 3, "total": 4, "percent": 75}, {"done": 1, "total": 4, "percent": 25}]
    assert whole == {"done": 0, "total": 4, "percent": 0}
