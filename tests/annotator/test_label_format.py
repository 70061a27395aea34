"""The label CSV format (``annotator.label_format``): parsing and path-suffix matching, no database."""
import subprocess
import sys

import pytest

from annotator.label_format import (
    BACKGROUND_VALUES, CATEGORIES, LabelRow, RowError, SuffixIndex, count_rows, match_rows, parse_label_csv,
)

HEADER = "image_path,background,defect_category\n"


def messages(errors):
    return [(e.line, e.message) for e in errors]


def test_categories_are_the_label_model_choices():
    from annotator.models import Label

    assert CATEGORIES == tuple(Label.Category.values)


def test_module_does_not_import_django():
    code = "import sys, annotator.label_format; print(any(m.split('.')[0] == 'django' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_parses_good_rows_with_any_spelling():
    text = (
        "\ufeffImage_Path, Background ,Category,notes\n"  # BOM, case, spaces, the category alias, extra column
        "bottle/test/broken_large/000.png,YES,Structural,first\n"
        "\n"
        " test/contamination/001.png ,without,contamination,\n"
        "a\\b\\c.png,0,combined,\n"
    )
    rows, errors = parse_label_csv(text.encode())
    assert errors == []
    assert rows == [
        LabelRow(2, "bottle/test/broken_large/000.png", True, "structural"),
        LabelRow(4, "test/contamination/001.png", False, "contamination"),
        LabelRow(5, "a\\b\\c.png", False, "combined"),
    ]
    assert count_rows(rows, errors) == 3
    assert parse_label_csv(HEADER + "x/y/z.png,y,surface\n")[0] == [LabelRow(2, "x/y/z.png", True, "surface")]
    assert set(BACKGROUND_VALUES) >= {"yes", "no", "true", "false", "1", "0"}


def test_reports_every_bad_row():
    text = HEADER + "a/b/0.png,maybe,structural\na/b/1.png,yes,scratchy\na/b/2.png,?,??\ntoo,few\na/b/3.png,no,surface\n"
    rows, errors = parse_label_csv(text)
    assert rows == [LabelRow(6, "a/b/3.png", False, "surface")]
    assert messages(errors) == [
        (2, "bad background value 'maybe' (expected yes or no)"),
        (3, "unknown defect category 'scratchy' (expected one of structural, surface, contamination, combined)"),
        (4, "bad background value '?' (expected yes or no)"),
        (4, "unknown defect category '??' (expected one of structural, surface, contamination, combined)"),
        (5, "expected 3 columns, found 2"),
    ]
    assert [e.image_path for e in errors] == ["a/b/0.png", "a/b/1.png", "a/b/2.png", "a/b/2.png", "too"]
    assert str(errors[0]) == "line 2: a/b/0.png: bad background value 'maybe' (expected yes or no)"
    assert count_rows(rows, errors) == 5


@pytest.mark.parametrize("data,expected", [
    (b"", "The file is empty: expected the header image_path,background,defect_category."),
    ("", "The file is empty"),
    (b"\n\n", "The file is empty"),
    (b"path,bg,cat\nx,yes,surface\n",
     "missing header column(s): image_path, background, defect_category (expected image_path,background,defect_category)"),
    (b"image_path,background\nx,yes\n", "missing header column(s): defect_category"),
    ("image_path,background,defect_category\nwidget/tést,yes,surface\n".encode("latin-1"), "The file is not UTF-8 text"),
    (HEADER.encode(), "The file has a header but no rows."),
    ((HEADER + "\n ,, \n").encode(), "The file has a header but no rows."),
    (b'"unterminated,yes,surface\n', "malformed CSV"),
])
def test_file_level_errors(data, expected):
    rows, errors = parse_label_csv(data)
    assert rows == [] and len(errors) == 1 and expected in str(errors[0]), [str(e) for e in errors]


def test_malformed_csv_after_good_rows():
    rows, errors = parse_label_csv(HEADER + 'a/b/0.png,yes,surface\n"a/b/1.png,yes,surface\n')
    assert [r.line for r in rows] == [2]
    assert len(errors) == 1 and errors[0].line == 3 and errors[0].message.startswith("malformed CSV: ")
    assert count_rows(rows, errors) == 1


def test_row_error_str_without_line():
    assert str(RowError(0, "", "The file is empty")) == "The file is empty"
    assert str(RowError(3, "", "expected 3 columns, found 1")) == "line 3: -: expected 3 columns, found 1"


@pytest.fixture
def index():
    # Images known relative to the dataset folder and to its parent, as both callers build them.
    paths = {
        1: "bottle/test/broken_large/000.png",
        2: "bottle/test/broken_large/001.png",
        3: "cable/test/broken_large/000.png",
        4: "bottle/test/good/000.png",
    }
    return SuffixIndex({key: [path, "mvtec_ad/" + path] for key, path in paths.items()})


@pytest.mark.parametrize("path,key", [
    ("bottle/test/broken_large/000.png", 1),
    ("mvtec_ad/bottle/test/broken_large/000.png", 1),
    ("/data/elsewhere/mvtec_ad/bottle/test/broken_large/000.png", 1),
    ("./bottle\\test\\broken_large\\001.png", 2),
    ("test/broken_large/001.png", 2),  # only one image ends so
    ("broken_large/001.png", 2),  # a short path counts whole
    ("001.png", 2),
    ("cable/test/broken_large/000.png", 3),
    ("other/bottle/test/good/000.png", 4),  # the longest suffix that matches wins
])
def test_suffix_index_finds(index, path, key):
    assert index.find(path) == (key, "")


@pytest.mark.parametrize("path,why", [
    ("", "empty image path"),
    (" ./ ", "empty image path"),
    ("test/broken_large/000.png", "ambiguous image path (matches 2 images)"),
    ("000.png", "ambiguous image path (matches 3 images)"),
    ("bottle/test/broken_large/999.png", "unknown image (no image of this dataset has this path)"),
    ("x/test/crack/000.png", "unknown image (no image of this dataset has this path)"),
    # a file name alone matching is not enough for a longer path
    ("elsewhere/broken_large/001.png", "unknown image (no image of this dataset has this path)"),
    # another product's image with the same tail never lands on this dataset's image
    ("capsule/test/broken_large/001.png", "unknown image (no image of this dataset has this path)"),
    ("mvtec_ad/hazelnut/test/good/000.png", "unknown image (no image of this dataset has this path)"),
])
def test_suffix_index_refuses(index, path, why):
    assert index.find(path) == (None, why)


def test_suffix_index_takes_part_tuples():
    index = SuffixIndex({"a": [("bottle", "test", "x", "0.png")], "b": ["test/x/1.png"]})
    assert index.find("bottle/test/x/0.png") == ("a", "")
    assert index.find("test/x/1.png") == ("b", "")


def test_match_rows(index):
    rows, errors = parse_label_csv(
        HEADER
        + "bottle/test/broken_large/000.png,yes,structural\n"
        + "test/broken_large/001.png,no,surface\n"
        + "mvtec_ad/bottle/test/broken_large/000.png,yes,surface\n"
        + "bottle/test/good/000.png,yes,surface\n"
        + "nowhere/test/a/0.png,yes,surface\n"
    )
    assert errors == []
    matches, errors = match_rows(rows, index.find, lambda key: key != 4)
    assert [(row.line, key) for row, key in matches] == [(2, 1), (3, 2)]
    assert messages(errors) == [
        (4, "duplicate row: the same image is already on line 2"),
        (5, "not an anomalous test image (only those are labelled)"),
        (6, "unknown image (no image of this dataset has this path)"),
    ]
