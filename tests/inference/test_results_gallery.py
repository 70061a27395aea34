"""The results page's gallery: each tile is the engine's outlined picture, the legend in the
engine's colours; a run made before the outlined pictures keeps its three pictures per tile."""
import copy
import re

import pytest

from inference.engine.colours import PREDICTION_RGB, TRUTH_RGB, hex_colour
from tests.inference.results_pages import page_and_csv, store_report


@pytest.mark.django_db
def test_tiles_show_the_outlined_picture_and_old_runs_their_three(padim_part, client, admin_account):
    run = padim_part.run
    client.force_login(admin_account)
    html, _ = page_and_csv(client, run)
    gallery = html[html.index('<ul class="gallery">'):]
    assert gallery.count('class="shot outlined"') >= 3 and 'class="triple"' not in gallery
    assert gallery.count('_outline.png" alt=') == gallery.count('class="shot outlined"')
    assert f'fill="{hex_colour(TRUTH_RGB)}"' in html and f'fill="{hex_colour(PREDICTION_RGB)}"' in html
    first = re.search(r'<img class="overlay" src="([^"]+_outline\.png)"', gallery).group(1)
    picture = client.get(first)
    assert picture.status_code == 200 and b"".join(picture.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"

    old = copy.deepcopy(padim_part.report)
    for entry in old["per_image"]:
        entry["artifacts"].pop("outline")
    store_report(padim_part, old)
    html, _ = page_and_csv(client, run)
    gallery = html[html.index('<ul class="gallery">'):]
    assert "_outline.png" not in html and 'class="shot outlined"' not in gallery
    assert gallery.count('class="triple"') >= 3 and 'alt="heat map"' in gallery and 'alt="predicted mask"' in gallery
