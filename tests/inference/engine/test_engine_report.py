"""How a report's estimates read wherever they are shown (CLI, pages, recommendation)."""
import numpy as np

from inference.engine.report import estimate_parts, estimate_text


def test_an_estimate_reads_as_value_and_interval():
    assert estimate_text({"value": 0.91234, "low": 0.8712, "high": 0.9441}) == "0.912 [0.871, 0.944]"
    assert estimate_parts({"value": 0.5, "low": 0.25, "high": 0.75}, digits=2) == ("0.50", "[0.25, 0.75]")


def test_missing_parts_are_left_out_not_invented():
    assert estimate_text({"value": 0.5, "low": None, "high": None}) == "0.500"
    assert estimate_text({"value": None, "low": 0.1, "high": 0.2}) == "—"
    assert estimate_text(None) == "—"
    assert estimate_text(True) == "—"  # a flag is not a number
    assert estimate_text(np.float32(0.25)) == "0.250"
