"""The category-suggestion features and classifier (annotator.suggestion_features) on small synthetic
pictures, each built to show one thing a feature is meant to measure."""
import numpy as np
import pytest

from annotator import suggestion_features as sf

SIZE = 128


def grey(value=0.5, size=SIZE):
    return np.full((size, size, 3), int(value * 255), dtype=np.uint8)


def disc(cx, cy, r, size=SIZE):
    ys, xs = np.mgrid[0:size, 0:size]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r ** 2


def named(vector):
    return dict(zip(sf.FEATURE_NAMES, vector))


def test_two_separate_regions_count_as_two_components_but_a_crumb_does_not():
    two = disc(30, 30, 10) | disc(90, 90, 10)
    assert named(sf.features(grey(), grey(), two))["components"] == 2
    crumb = disc(30, 30, 14)
    crumb[100, 100] = True  # one stray pixel of an outline
    assert named(sf.features(grey(), grey(), crumb))["components"] == 1


def test_a_thin_line_is_elongated_and_a_disc_is_round_and_solid():
    line = np.zeros((SIZE, SIZE), bool)
    line[60:63, 10:118] = True
    thin = named(sf.features(grey(), grey(), line))
    round_ = named(sf.features(grey(), grey(), disc(64, 64, 20)))
    assert thin["elongation"] > 0.9
    assert round_["elongation"] < 0.1
    assert round_["solidity"] > 0.9
    ring = disc(64, 64, 30) & ~disc(64, 64, 24)  # a crack along a rim: far from convex
    assert named(sf.features(grey(), grey(), ring))["solidity"] < 0.4


def test_area_and_place_in_the_image():
    centre = named(sf.features(grey(), grey(), disc(64, 64, 8)))
    rim = named(sf.features(grey(), grey(), disc(120, 64, 8)))
    big = named(sf.features(grey(), grey(), disc(64, 64, 40)))
    assert centre["centre_distance"] < 0.05 < 0.8 < rim["centre_distance"]
    assert big["area"] > centre["area"]
    assert big["area"] == pytest.approx(np.log10(np.pi * 40 ** 2 / SIZE ** 2), abs=0.02)


def test_a_brown_blob_on_grey_shifts_chroma_and_shows_a_colour_the_reference_lacks():
    mask = disc(64, 64, 16)
    image = grey()
    image[mask] = (140, 90, 40)  # brown
    stain = named(sf.features(image, grey(), mask))
    assert stain["chroma_shift"] > 0.2
    assert stain["novel_colour"] == pytest.approx(1.0)
    assert stain["colour_change"] > 1.0
    # A grey change of the same place (darker, no colour): lightness moves, chroma does not.
    darker = grey()
    darker[mask] = (60, 60, 60)
    dent = named(sf.features(darker, grey(), mask))
    assert dent["chroma_shift"] < 0.02
    assert dent["lightness_shift"] < -0.2


def test_edges_lost_where_the_reference_had_structure():
    """A break removes the reference's structure (a stripe pattern) under the mask."""
    reference = grey()
    reference[:, ::8] = 230  # vertical stripes: structure everywhere
    image = reference.copy()
    mask = disc(64, 64, 20)
    image[mask] = 128  # flattened where it broke
    broken = named(sf.features(image, reference, mask))
    assert broken["edge_change"] < -1.0
    # On a flat reference, a blob adds edges rather than removing them, and lies off structure.
    flat = grey()
    blob = flat.copy()
    blob[disc(64, 64, 20)] = 30
    added = named(sf.features(blob, flat, mask))
    assert added["edge_change"] > 1.0


def test_the_reference_is_resized_to_the_image_and_an_empty_mask_has_no_features():
    image = grey(size=SIZE)
    big_reference = grey(size=2 * SIZE)
    assert len(sf.features(image, big_reference, disc(64, 64, 10))) == len(sf.FEATURE_NAMES)
    assert sf.features(image, big_reference, np.zeros((SIZE, SIZE), bool)) is None
    with pytest.raises(ValueError, match="differ in size"):
        sf.features(image, image, np.zeros((SIZE, SIZE + 1), bool))


def test_a_hairline_mask_survives_the_working_size():
    image = grey(size=1024)
    line = np.zeros((1024, 1024), bool)
    line[500, 100:900] = True  # one pixel wide at 1024: an eighth of a pixel at the working size
    assert sf.features(image, image, line) is not None


def test_enough_labels_needs_five_labels_of_two_categories():
    assert not sf.enough_labels(["structural"] * 9)
    assert not sf.enough_labels(["structural", "surface", "surface", "surface"])
    assert sf.enough_labels(["structural", "surface", "surface", "surface", "surface"])


def test_the_classifier_learns_separable_categories_and_round_trips_as_json():
    rng = np.random.default_rng(0)
    centres = {"structural": 0.0, "contamination": 3.0, "combined": -3.0}
    vectors, categories = [], []
    for category, centre in centres.items():
        for _ in range(6):
            vectors.append(rng.normal(centre, 0.3, len(sf.FEATURE_NAMES)))
            categories.append(category)
    model = sf.fit(vectors, categories)
    again = sf.SuggestionModel.from_json(model.to_json())
    for category, centre in centres.items():
        guess, probability = again.predict(np.full(len(sf.FEATURE_NAMES), centre))
        assert guess == category and probability > 0.5
    assert again.n_labels == 18
    # A model of other features (an older version) is not used.
    assert sf.SuggestionModel.from_json({**model.to_json(), "version": sf.FEATURE_VERSION - 1}) is None


def test_two_classes_use_the_binary_form():
    vectors = [[0.0] * len(sf.FEATURE_NAMES)] * 3 + [[1.0] * len(sf.FEATURE_NAMES)] * 3
    model = sf.fit(vectors, ["surface"] * 3 + ["structural"] * 3)
    assert model.predict([1.0] * len(sf.FEATURE_NAMES))[0] == "structural"
    assert model.predict([0.0] * len(sf.FEATURE_NAMES))[0] == "surface"
    with pytest.raises(ValueError, match="at least 5 labels"):
        sf.fit(vectors[:4], ["surface", "surface", "structural", "structural"])
