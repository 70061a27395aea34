"""``import_labels CSV --dataset NAME [--annotator USER] [--dry-run]``: import labels made elsewhere."""
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from annotator.models import Dataset
from annotator.services.label_csv import import_labels


class Command(BaseCommand):
    help = "Import a label CSV (image_path,background,defect_category) into a dataset; all rows or none."

    def add_arguments(self, parser):
        parser.add_argument("csv", type=Path)
        parser.add_argument("--dataset", required=True, help="dataset name")
        parser.add_argument("--annotator", help="username the labels are attributed to (default: --as user)")
        parser.add_argument("--as", dest="importer", help="username recorded as having made the change "
                            "(default: the annotator, else the first admin)")
        parser.add_argument("--dry-run", action="store_true", help="check and report, change nothing")

    def handle(self, *args, **options):
        User = get_user_model()
        try:
            dataset = Dataset.objects.get(name=options["dataset"])
        except Dataset.DoesNotExist:
            raise CommandError(f"No dataset named {options['dataset']!r}.")

        def user(name):
            try:
                return User.objects.get(username=name)
            except User.DoesNotExist:
                raise CommandError(f"No user named {name!r}.")

        annotator = user(options["annotator"]) if options["annotator"] else None
        importer = user(options["importer"]) if options["importer"] else annotator
        if importer is None:
            importer = (User.objects.filter(is_superuser=True).order_by("pk").first()
                        or User.objects.filter(role="admin").order_by("pk").first())
            if importer is None:
                raise CommandError("No admin user to attribute the import to; pass --annotator.")
        path = options["csv"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        with path.open("rb") as handle:
            report = import_labels(File(handle), dataset=dataset, importer=importer,
                                   annotator=annotator, dry_run=options["dry_run"])
        for error in report.errors:
            self.stderr.write(str(error))
        if not report.ok:
            raise CommandError(report.summary())
        self.stdout.write(report.summary())
