"""Label CSV export (two variants, streamed) and import (dry run, per-row errors, atomic, command)."""
import csv
import io

import pytest
from django.core.management import CommandError, call_command

from annotator.models import Image, Label, LabelHistory
from annotator.services import label_csv, review
from annotator.services.labels import save_label
from tests.api.labelling_factory import make_dataset


@pytest.fixture
def dataset(db, tmp_path, settings):
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    return make_dataset(tmp_path, overlap=2, products=(("widget", "object", 3), ("fabric", "texture", 2)),
                        good_train=1)


def rows(lines):
    return list(csv.DictReader(io.StringIO("".join(lines))))


def anomalous(product):
    return list(Image.objects.filter(product__name=product, is_anomalous=True).order_by("path"))


def test_export_both_variants(dataset, make_user, reviewer_account):
    a, b = make_user("alice"), make_user("bob")
    w0, w1, w2 = anomalous("widget")
    save_label(image=w0, annotator=a, background=True, category="surface")
    save_label(image=w0, annotator=b, background=True, category="surface")
    save_label(image=w1, annotator=a, background=True, category="surface")
    save_label(image=w1, annotator=b, background=False, category="structural")
    save_label(image=w2, annotator=a, background=True, category="combined")
    save_label(image=w2, annotator=b, background=True, category="contamination")
    review.decide(image=w2, reviewer=reviewer_account, background=True, category="combined")

    by_image = {r["image_path"]: r for r in rows(label_csv.export_lines(dataset, "images", reviewer_account))}
    assert list(by_image) == [w0.path, w1.path, w2.path]
    first = by_image[w0.path]
    assert (first["dataset"], first["product"], first["defect_type"]) == ("demo", "widget", w0.defect_type)
    assert (first["background"], first["category"], first["source"], first["agreement"]) == ("yes", "surface", "unanimous", "1.000")
    assert first["annotators"] == "alice;bob" and first["n_annotations"] == "2" and first["labelled_at"]
    assert (by_image[w1.path]["category"], by_image[w1.path]["source"]) == ("", "unresolved")
    decided = by_image[w2.path]
    assert (decided["category"], decided["source"], decided["agreement"]) == ("combined", "review", "0.500")

    per_label = rows(label_csv.export_lines(dataset, "annotations", reviewer_account))
    assert len(per_label) == 6
    assert {(r["image_path"], r["annotator"], r["category"], r["agreement"]) for r in per_label if r["image_path"] == w1.path} == {
        (w1.path, "alice", "surface", "0.500"), (w1.path, "bob", "structural", "0.500")}

    # An annotator exports only their own labels.
    mine = rows(label_csv.export_lines(dataset, "images", a))
    assert [(r["image_path"], r["category"], r["annotators"]) for r in mine] == [
        (w0.path, "surface", "alice"), (w1.path, "surface", "alice"), (w2.path, "combined", "alice")]
    with pytest.raises(ValueError):
        label_csv.export_lines(dataset, "nope")


def test_import_dry_run_then_apply(dataset, admin_account, annotator_account):
    w0, w1, w2 = anomalous("widget")
    f0, f1 = anomalous("fabric")
    text = (
        "image_path,background,defect_category\n"
        f"demo/{w0.path},yes,structural\n"          # relative to the dataset folder's parent
        f"{w1.path},YES,Surface\n"                   # relative to the dataset folder
        f"/elsewhere/mvtec/demo/{f0.path},no,contamination\n"  # any longer prefix
    )
    report = label_csv.import_labels(text.encode(), dataset=dataset, importer=admin_account,
                                     annotator=annotator_account, dry_run=True)
    assert report.ok and not report.applied and report.rows == 3 and report.created == 3
    assert not Label.objects.exists()
    report = label_csv.import_labels(text.encode(), dataset=dataset, importer=admin_account, annotator=annotator_account)
    assert report.applied and report.categories == {"structural": 1, "surface": 1, "contamination": 1}
    labels = {l.image_id: (l.background, l.category, l.annotator) for l in Label.objects.all()}
    assert labels == {w0.pk: (True, "structural", annotator_account), w1.pk: (True, "surface", annotator_account),
                      f0.pk: (False, "contamination", annotator_account)}
    history = LabelHistory.objects.all()
    assert {(h.source, h.changed_by_id, h.annotator_id) for h in history} == {
        ("csv-import", admin_account.pk, annotator_account.pk)}
    again = label_csv.import_labels(text.encode(), dataset=dataset, importer=admin_account, annotator=annotator_account)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)


def test_import_reports_every_bad_row_and_changes_nothing(dataset, admin_account):
    w0, w1, w2 = anomalous("widget")
    good = Image.objects.filter(product__name="widget", split="train").first()
    text = (
        "image_path,background,defect_category\n"
        f"{w0.path},yes,structural\n"
        f"{w1.path},maybe,structural\n"
        f"{w2.path},yes,scratchy\n"
        "widget/test/crack/999.png,yes,surface\n"
        f"{w0.path},no,surface\n"
        f"{good.path},yes,surface\n"
        "too,few\n"
    )
    report = label_csv.import_labels(text.encode(), dataset=dataset, importer=admin_account)
    assert not report.ok and not report.applied
    messages = {(e.line, e.message.split(" (")[0].split(":")[0]) for e in report.errors}
    assert messages == {
        (3, "bad background value 'maybe'"),
        (4, "unknown defect category 'scratchy'"),
        (5, "unknown image"),
        (6, "duplicate row"),
        (7, "not an anomalous test image"),
        (8, "expected 3 columns, found 2"),
    }
    assert not Label.objects.exists() and not LabelHistory.objects.exists()
    assert "errors, nothing imported" in report.summary()


@pytest.mark.parametrize("data,expected", [
    (b"", "empty"),
    (b"path,bg,cat\nx,yes,surface\n", "missing header column(s): image_path, background, defect_category"),
    ("image_path,background,defect_category\nwidget/tést,yes,surface\n".encode("latin-1"), "not UTF-8"),
    (b"image_path,background,defect_category\n", "no rows"),
    (b'image_path,background,defect_category\n"unterminated,yes,surface\n', "malformed CSV"),
])
def test_import_malformed_files(dataset, admin_account, data, expected):
    report = label_csv.import_labels(data, dataset=dataset, importer=admin_account)
    assert not report.ok
    assert any(expected in str(error) for error in report.errors), [str(e) for e in report.errors]


def test_import_is_all_or_nothing_when_saving_fails(dataset, admin_account, monkeypatch):
    w0, w1, _ = anomalous("widget")
    text = f"image_path,background,defect_category\n{w0.path},yes,surface\n{w1.path},yes,surface\n"
    calls = []
    original = label_csv.save_label

    def failing(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return original(**kwargs)

    monkeypatch.setattr(label_csv, "save_label", failing)
    with pytest.raises(RuntimeError):
        label_csv.import_labels(text.encode(), dataset=dataset, importer=admin_account)
    assert not Label.objects.exists() and not LabelHistory.objects.exists()


def test_import_labels_command(dataset, admin_account, annotator_account, tmp_path, capsys):
    w0, w1, _ = anomalous("widget")
    path = tmp_path / "labels.csv"
    path.write_text(f"image_path,background,defect_category\ndemo/{w0.path},yes,surface\ndemo/{w1.path},no,combined\n")
    call_command("import_labels", str(path), "--dataset", "demo", "--annotator", annotator_account.username, "--dry-run")
    assert "Dry run" in capsys.readouterr().out and not Label.objects.exists()
    call_command("import_labels", str(path), "--dataset", "demo", "--annotator", annotator_account.username)
    assert Label.objects.filter(annotator=annotator_account).count() == 2
    path.write_text("image_path,background,defect_category\nnowhere.png,yes,surface\n")
    with pytest.raises(CommandError, match="1 errors, nothing imported"):
        call_command("import_labels", str(path), "--dataset", "demo")
    with pytest.raises(CommandError, match="No dataset"):
        call_command("import_labels", str(path), "--dataset", "nope")


@pytest.mark.real_data
def test_import_real_bottle_reference_labels(db, settings, real_bottle_root, real_labels_csv, admin_account):
    from annotator.services.importing import import_dataset

    settings.DEFECTBENCH_DATA_ROOTS = [real_bottle_root.parent]
    dataset = import_dataset(real_bottle_root).dataset
    data = real_labels_csv.read_bytes()
    dry = label_csv.import_labels(data, dataset=dataset, importer=admin_account, dry_run=True)
    assert dry.ok, [str(e) for e in dry.errors]
    assert dry.rows == 63
    report = label_csv.import_labels(data, dataset=dataset, importer=admin_account)
    assert report.applied
    assert dict(report.categories) == {"structural": 41, "contamination": 21, "combined": 1}
    counts = {c: Label.objects.filter(image__product__dataset=dataset, category=c).count()
              for c in ("structural", "surface", "contamination", "combined")}
    assert counts == {"structural": 41, "surface": 0, "contamination": 21, "combined": 1}
    assert Label.objects.filter(image__defect_type="broken_large", category="structural").count() == 20
    exported = rows(label_csv.export_lines(dataset, "images", admin_account))
    assert len(exported) == 63 and all(r["background"] == "yes" for r in exported)


@pytest.mark.parametrize("variant", ["images", "annotations"])
def test_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(dataset, make_user, reviewer_account, variant):
    dataset.name = "=cmd|' /C calc'!A0"
    dataset.save()
    product = dataset.products.get(name="widget")
    product.name = "@SUM(1+1)"
    product.save()
    image = Image.objects.filter(product=product, is_anomalous=True).order_by("path").first()
    save_label(image=image, annotator=make_user("+plus"), background=True, category="surface")
    save_label(image=image, annotator=make_user("-minus"), background=True, category="surface")
    Image.objects.filter(pk=image.pk).update(defect_type="\tcrack\r")
    text = "".join(label_csv.export_lines(dataset, variant, reviewer_account))
    row = rows([text])[0]
    assert row["dataset"] == "'=cmd|' /C calc'!A0"
    assert row["product"] == "'@SUM(1+1)"
    assert row["defect_type"] == "'\tcrack\r"
    assert row["annotators"] == "'+plus;-minus"
    for cell in row.values():
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


def test_import_refuses_a_file_above_the_size_limit_before_reading_it(dataset, admin_account, settings, client):
    settings.DEFECTBENCH_MAX_LABEL_CSV_BYTES = 1000
    data = b"image_path,background,defect_category\n" + b"widget/test/crack/000.png,yes,surface\n" * 40

    class Upload(io.BytesIO):
        size = len(data)

        def read(self, *args):
            raise AssertionError("an oversized file must not be read")

    report = label_csv.import_labels(Upload(data), dataset=dataset, importer=admin_account)
    assert not report.ok and "at most 1000 bytes" in report.errors[0].message
    assert Label.objects.count() == 0
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(admin_account)
    upload = io.BytesIO(data)
    upload.name = "labels.csv"
    response = api.post("/api/labels-import/", {"file": upload, "dataset": dataset.name}, format="multipart")
    assert response.status_code == 400
    assert "at most 1000 bytes" in response.json()["errors"][0]["message"]
    assert Label.objects.count() == 0


def test_import_report_lists_a_bounded_number_of_errors(dataset, admin_account):
    data = "image_path,background,defect_category\n" + "".join(f"nope/{i}.png,yes,surface\n" for i in range(500))
    report = label_csv.import_labels(data.encode(), dataset=dataset, importer=admin_account)
    body = report.as_dict()
    assert body["error_count"] == 500 and len(body["errors"]) == label_csv.MAX_REPORTED_ERRORS


def test_reimporting_the_per_annotation_export_keeps_each_annotator(dataset, make_user, admin_account):
    """Issue 12: the annotations CSV re-imported gave every row to the importing admin."""
    a, b = make_user("alice"), make_user("bob")
    w0, w1, _ = anomalous("widget")
    save_label(image=w0, annotator=a, background=True, category="surface")
    save_label(image=w0, annotator=b, background=False, category="structural")
    save_label(image=w1, annotator=a, background=True, category="combined")
    exported = "".join(label_csv.export_lines(dataset, "annotations", admin_account))
    Label.objects.all().delete()
    report = label_csv.import_labels(exported, dataset=dataset, importer=admin_account)
    assert report.ok and report.applied and report.created == 3, report.as_dict()
    assert "alice" in report.annotator and "bob" in report.annotator
    got = set(Label.objects.values_list("annotator__username", "image_id", "background", "category"))
    assert got == {("alice", w0.pk, True, "surface"), ("bob", w0.pk, False, "structural"),
                   ("alice", w1.pk, True, "combined")}
    assert not Label.objects.filter(annotator=admin_account).exists()
    # An unknown name, or an annotator chosen on the form as well, is refused with nothing changed.
    bad = exported.replace(",bob,", ",nobody,")
    refused = label_csv.import_labels(bad, dataset=dataset, importer=admin_account)
    assert not refused.ok and any("no user named 'nobody'" in e.message for e in refused.errors)
    both = label_csv.import_labels(exported, dataset=dataset, importer=admin_account, annotator=a)
    assert not both.ok and "leave the annotator field empty" in str(both.errors[0])
    assert Label.objects.count() == 3


def test_the_per_image_export_reimports_with_the_command_unchanged(dataset, make_user, admin_account, tmp_path,
                                                                   capsys):
    """Issue 22: exported as it is, re-imported as it is; its unresolved rows are reported with their
    lines and skipped, not a failure of the whole file."""
    a, b = make_user("alice"), make_user("bob")
    w0, w1, w2 = anomalous("widget")
    f0, _ = anomalous("fabric")
    save_label(image=w0, annotator=a, background=True, category="surface")
    save_label(image=w0, annotator=b, background=False, category="structural")  # unresolved
    save_label(image=w1, annotator=a, background=True, category="combined")
    save_label(image=w1, annotator=b, background=True, category="combined")
    save_label(image=w2, annotator=a, background=True, category="surface")
    save_label(image=w2, annotator=b, background=True, category="structural")
    review.decide(image=w2, reviewer=admin_account, background=True, category="structural")
    save_label(image=f0, annotator=a, background=False, category="contamination")
    path = tmp_path / "images.csv"
    path.write_text("".join(label_csv.export_lines(dataset, "images", admin_account)))
    exported = rows(path.read_text().splitlines(keepends=True))
    line_of_w0 = 2 + [r["image_path"] for r in exported].index(w0.path)
    assert "category" in exported[0] and exported[line_of_w0 - 2]["source"] == "unresolved"
    carol = make_user("carol")

    call_command("import_labels", str(path), "--dataset", "demo", "--annotator", "carol")
    out = capsys.readouterr().out
    assert "3 labels were created" in out and f"1 unresolved row skipped (line {line_of_w0})" in out
    got = set(Label.objects.filter(annotator=carol).values_list("image_id", "background", "category"))
    assert got == {(w1.pk, True, "combined"), (w2.pk, True, "structural"), (f0.pk, False, "contamination")}
    # A really bad row still refuses the whole file, naming its line.
    path.write_text(path.read_text().replace(f"{f0.path},", f"{f0.path}x,"))
    with pytest.raises(CommandError, match="1 errors, nothing imported"):
        call_command("import_labels", str(path), "--dataset", "demo", "--annotator", "carol")
    assert "line " in capsys.readouterr().err


def test_an_annotators_export_with_hidden_folders_reimports(dataset, make_user, admin_account):
    """Paths an annotator's export shows when the dataset hides its folders (product/image-<id>)."""
    from annotator.models import Dataset

    Dataset.objects.filter(pk=dataset.pk).update(show_defect_folder=False)
    dataset.refresh_from_db()
    ann = make_user("ann")
    w0, *_ = anomalous("widget")
    save_label(image=w0, annotator=ann, background=True, category="surface")
    exported = "".join(label_csv.export_lines(dataset, "images", ann))
    assert f"widget/image-{w0.pk}.png" in exported
    Label.objects.all().delete()
    report = label_csv.import_labels(exported, dataset=dataset, importer=admin_account, annotator=ann)
    assert report.ok and report.created == 1, report.as_dict()
