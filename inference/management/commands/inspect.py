"""Inspect new images with a model package (no database): a thin CLI over ``inference.engine.package``.

    python manage.py inspect var/media/benchmarks/3/3/model new/*.png --output results.csv --maps maps/

One CSV row per image: verdict, image score against the package's image threshold, defect area
and connected components at the pixel threshold (the run's chosen technique, or ``--technique``).
``--maps DIR`` also writes each anomaly map (``.npy``, float32) and the predicted mask (PNG), at the
package's image size for a ``squash`` package, at the image's own size for ``keep_aspect`` and
``tiles`` (a tiles package inspects any size: tiles of the image at its resolution).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

FIELDS = ("image", "verdict", "score", "image_threshold", "technique", "pixel_threshold", "defect_area_fraction",
          "components", "largest_component_bbox", "peak", "inference_ms")


class Command(BaseCommand):
    help = "Inspect image files with a saved model package and write the verdicts as CSV."

    def add_arguments(self, parser):
        parser.add_argument("package", type=Path, help="model package folder")
        parser.add_argument("images", nargs="+", type=Path, help="image files")
        parser.add_argument("--output", type=Path, default=None, help="CSV file (default: standard output)")
        parser.add_argument("--maps", type=Path, default=None, metavar="DIR", help="write maps (.npy) and masks (.png)")
        parser.add_argument("--technique", default=None, help="pixel threshold technique (default: the run's chosen)")
        parser.add_argument("--image-size", type=int, default=None, help="refuse unless the package uses this size")
        parser.add_argument("--weights-path", default=None, help="backbone weights file on this machine")
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--threads", type=int, default=None, help="torch threads")

    def handle(self, *args, **options):
        from inference.engine.data import ImageLoadError
        from inference.engine.package import PackageError, load_package

        missing = [str(p) for p in options["images"] if not p.is_file()]
        if missing:
            raise CommandError(f"Not image files: {', '.join(missing[:10])}.")
        if options["threads"]:
            import torch

            torch.set_num_threads(options["threads"])
        try:
            inspector = load_package(options["package"], device=options["device"], image_size=options["image_size"],
                                     weights_path=options["weights_path"])
            results = inspector.inspect_files(options["images"], technique=options["technique"],
                                              batch_size=options["batch_size"])
        except (PackageError, ImageLoadError) as error:
            raise CommandError(str(error))
        if options["maps"] is not None:
            self._write_maps(options["maps"], results)
        handle = open(options["output"], "w", newline="") if options["output"] else sys.stdout
        try:
            writer = csv.writer(handle)
            writer.writerow(FIELDS)
            for r in results:
                largest = r.components[0] if r.components else None
                writer.writerow([r.name, "defective" if r.defective else "good", f"{r.score:.6g}",
                                 f"{r.image_threshold:.6g}", r.technique, f"{r.pixel_threshold:.6g}",
                                 f"{r.defect_area_fraction:.6f}", len(r.components),
                                 " ".join(map(str, largest.bbox)) if largest else "",
                                 f"{largest.peak:.6g}" if largest else "", f"{r.inference_ms:.1f}"])
        finally:
            if options["output"]:
                handle.close()
        defective = sum(r.defective for r in results)
        self.stderr.write(f"{len(results)} image(s): {defective} defective, {len(results) - defective} good"
                          + (f"; wrote {options['output']}" if options["output"] else ""))

    @staticmethod
    def _write_maps(folder: Path, results) -> None:
        import numpy as np
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        for k, r in enumerate(results):
            stem = f"{k:04d}_{Path(r.name).stem}"
            np.save(folder / f"{stem}_map.npy", r.anomaly_map)
            Image.fromarray((r.predicted_mask * 255).astype(np.uint8)).save(folder / f"{stem}_mask.png")
