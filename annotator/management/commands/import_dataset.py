"""``manage.py import_dataset PATH [--layout auto|mvtec|btad|folder] [--name NAME]``."""
import time

from django.core.management.base import BaseCommand, CommandError

from annotator.layouts import LAYOUTS
from annotator.services.importing import ImportFailed, import_dataset


def stderr_progress(label: str, stream):
    """A ``progress(done, total)`` callback drawing one ``\\r``-updated line on ``stream``
    (a command's ``self.stderr``), at most five updates a second."""
    state = {"last": 0.0}

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - state["last"] < 0.2:
            return
        state["last"] = now
        stream.write(f"\r{label}: {done}/{total} files", ending="\n" if done >= total else "")
        stream.flush()

    return progress


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
                path, layout=layout, name=name, progress=stderr_progress("Checking images", self.stderr)
            )
        except ImportFailed as error:
            raise CommandError(str(error)) from None
        for line in report.summary_lines():
            self.stdout.write(line)
