"""Fixtures of the labelling-side tests."""
import pytest


@pytest.fixture
def data_root(settings, tmp_path):
    """The only allowed data root of the test (uploads under MEDIA_ROOT are inside it too)."""
    root = tmp_path / "data"
    root.mkdir()
    settings.DEFECTBENCH_DATA_ROOTS = [tmp_path]
    return root
