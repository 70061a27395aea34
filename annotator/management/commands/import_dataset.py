"""``manage.py import_dataset PATH [--layout ...] [--name NAME] [--skip-invalid] ...`` (see --help)."""
import sys

from django.core.management.base import BaseCommand, CommandError

from annotator.layouts import DEFAULT_GOOD_FOLDERS, DEFAULT_MASK_SUFFIXES, DEFAULT_SPLIT_SEED, DEFAULT_TEST_SHARE, LAYOUTS
from annotator.services.importing import ImportFailed, import_dataset
from inference.engine.cli_progress import file_progress
from inference.engine.pixels import MASK_THRESHOLD


class Command(BaseCommand):
    help = (
        "Import a dataset folder (MVTec AD, BTAD, plain good/anomalous/masks folders, masks beside "
        "their images) or a manifest file in place. Every file is checked first; on any problem "
        "nothing is imported (unless --skip-invalid). Re-running is safe."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="dataset folder or manifest file, inside DEFECTBENCH_DATA_ROOTS")
        parser.add_argument("--layout", choices=["auto", *LAYOUTS], default="auto")
        parser.add_argument("--name", help="dataset name (default: the folder name)")
        parser.add_argument("--skip-invalid", action="store_true",
                            help="import every valid file; the others go to the dataset's problem report")
        parser.add_argument("--mask-suffix", help=f"beside: mask = <stem><suffix>.<ext> "
                            f"(default: any of {', '.join(DEFAULT_MASK_SUFFIXES)})")
        parser.add_argument("--mask-ext", help="beside: masks have this extension (e.g. png), "
                            "possibly with the image's own stem")
        parser.add_argument("--good-folders", help="beside/manifest: comma-separated folder names (or "
                            f"defect types) of defect-free images (default {','.join(DEFAULT_GOOD_FOLDERS)})")
        parser.add_argument("--mask-threshold", type=float,
                            help=f"grayscale masks: defect where value >= this share of full scale (default {MASK_THRESHOLD})")
        parser.add_argument("--split-seed", type=int, help=f"seed of the split made when none is given (default {DEFAULT_SPLIT_SEED})")
        parser.add_argument("--test-share", type=float, help="share of defect-free images held out for "
                            f"test when no split is given (default {DEFAULT_TEST_SHARE})")

    def handle(self, *args, path, layout, name, **options):
        good = options["good_folders"]
        try:
            report = import_dataset(
                path, layout=layout, name=name,
                progress=file_progress("checking images", options.get("stderr") or sys.stderr),
                skip_invalid=options["skip_invalid"], mask_suffix=options["mask_suffix"],
                mask_ext=options["mask_ext"],
                good_folders=[g.strip() for g in good.split(",") if g.strip()] if good else None,
                mask_threshold=options["mask_threshold"], split_seed=options["split_seed"],
                test_share=options["test_share"],
            )
        except ImportFailed as error:
            raise CommandError(str(error)) from None
        for line in report.summary_lines():
            self.stdout.write(line)
