"""Colours that pictures and pages share (no heavy import: web pages read them too)."""

# The outlines of every picture that shows both (the gallery's tiles, its enlarged view):
# ground truth green, prediction magenta, apart from each other and from most product colours.
TRUTH_RGB = (40, 220, 90)
PREDICTION_RGB = (255, 0, 255)


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)
