"""How fast an import checks and writes many small images, and whether its memory stays flat.

    .venv/bin/python bench/import_speed.py [--images 10000] [--size 64]

Writes ``--images`` small synthetic PNGs in the beside layout (a tenth anomalous, with a 0/255
mask beside each; the rest in good/) to a temporary folder, imports them with
``annotator.services.importing.import_dataset`` into a fresh SQLite database (a temporary
DEFECTBENCH_VAR_DIR, so nothing of the project is touched) and writes
``bench/results/<date>-import-speed.json``: seconds for the import (checks + split + database
writes), images per second, and the process RSS sampled every 10 % of the checks (flat memory:
the last sample is close to the first).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**2


def write_dataset(root: Path, count: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4: size // 2, size // 4: size // 2] = 255
    mask_png = root / "_mask_template.png"
    root.mkdir(parents=True)
    Image.fromarray(mask).save(mask_png)
    (root / "good").mkdir()
    (root / "parts").mkdir()
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)  # every image distinct
        if index % 10 == 0:
            Image.fromarray(pixels).save(root / "parts" / f"p{index:05d}.png", compress_level=1)
            shutil.copyfile(mask_png, root / "parts" / f"p{index:05d}_mask.png")
        else:
            Image.fromarray(pixels).save(root / "good" / f"g{index:05d}.png", compress_level=1)
    mask_png.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="defectbench-import-bench-"))
    try:
        data = work / "data" / "many"
        started = time.monotonic()
        write_dataset(data, args.images, args.size)
        write_seconds = time.monotonic() - started

        os.environ["DEFECTBENCH_VAR_DIR"] = str(work / "var")
        os.environ["DEFECTBENCH_DATA_ROOTS"] = str(work / "data")
        os.environ.pop("DATABASE_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        sys.path.insert(0, str(REPO))
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from annotator.services.importing import import_dataset

        samples: list[tuple[int, float]] = []
        next_tenth = [0]

        def progress(done: int, total: int) -> None:
            if total and done * 10 >= next_tenth[0] * total:
                samples.append((done, round(rss_mb(), 1)))
                next_tenth[0] += 1

        rss_before = rss_mb()
        started = time.monotonic()
        report = import_dataset(data, progress=progress)
        seconds = time.monotonic() - started
        result = {
            "date": datetime.date.today().isoformat(),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "images": args.images, "image_size": args.size, "files": args.images + args.images // 10,
            "layout": report.layout, "added": report.added,
            "anomalous": sum(summary.anomalous for summary in report.products.values()),
            "write_dataset_seconds": round(write_seconds, 1),
            "import_seconds": round(seconds, 1),
            "images_per_second": round(args.images / seconds, 1),
            "rss_mb_before_import": round(rss_before, 1),
            "rss_mb_during_checks": samples,  # (files checked, RSS MB) every tenth
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "summary": report.summary_lines(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = REPO / "bench" / "results" / f"{result['date']}-import-speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
