"""``manage.py import_dataset PATH [--layout auto|mvtec|btad|folder] [--name NAME]``."""
import sys

from django.core.management.base import BaseCommand, CommandError

from annotator.layouts import LAYOUTS
from annotator.services.importing import ImportFailed, import_dataset
from inference.engine.cli_progress import file_progress


class Command(BaseCommand):
    help = (
        "Import a dataset folder (MVTec AD, BTAD or plain good/anomalous/masks folders) in place. "
        "Every file is checked first; on any problem nothing is imported. Re-running is safe."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="dataset folder, inside DEFECTBENCH_DATA_ROOTS")
        parser.add_argument("--layout", choices=["auto", *LAYOUTS], default="auto")
        parser.add_argument("--name", help="dataset name (default: the folder name)")

    def handle(self, *args, path, layout, name, **options):
        try:
            report = import_dataset(
                path, layout=layout, name=name, progress=file_progress("checking images", options.get("stderr") or sys.stderr)
            )
        except ImportFailed as error:
            raise CommandError(str(error)) from None
        for line in report.summary_lines():
            self.stdout.write(line)
