"""``manage.py setup_demo``: demo users and the demo dataset, for ``make run``. Safe to re-run.

Users ``admin`` (role admin, superuser, staff) and ``annotator`` (role annotator). Passwords come
from ``DEFECTBENCH_DEMO_ADMIN_PASSWORD`` / ``DEFECTBENCH_DEMO_ANNOTATOR_PASSWORD`` when set (and
are then reset on every run where they differ); otherwise a random one is generated and printed
when the user is first created, and left unchanged afterwards. No password is stored anywhere in
plaintext.
The demo dataset is generated into ``VAR_DIR/datasets/demo`` unless already there, and imported
(re-importing adds nothing).
"""
import os
import secrets
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotator.services.demo import generate_demo_dataset
from annotator.services.importing import ImportFailed, import_dataset
from inference.engine.cli_progress import file_progress

DEMO_USERS = (
    # username, role, superuser/staff, password variable
    ("admin", "admin", True, "DEFECTBENCH_DEMO_ADMIN_PASSWORD"),
    ("annotator", "annotator", False, "DEFECTBENCH_DEMO_ANNOTATOR_PASSWORD"),
)


def demo_dataset_dir():
    return settings.VAR_DIR / "datasets" / "demo"


class Command(BaseCommand):
    help = "Create the demo users and generate and import the demo dataset (idempotent)."

    def handle(self, *args, **options):
        User = get_user_model()
        for username, role, privileged, variable in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username, defaults={"role": role})
            user.role = role
            user.is_superuser = user.is_staff = privileged
            password = os.environ.get(variable)
            if password:
                # Set only when it differs: a new password revokes the user's API token.
                if not user.check_password(password):
                    user.set_password(password)
                note = f"password from {variable}"
            elif created:
                password = secrets.token_urlsafe(12)
                user.set_password(password)
                note = f"password: {password}"
            else:
                note = "password unchanged"
            user.save()
            state = "created" if created else "exists"
            self.stdout.write(f"User {username} ({role}, {state}): {note}")

        root = demo_dataset_dir()
        if not (root / "defectbench.json").is_file():
            generate_demo_dataset(root)
            self.stdout.write(f"Demo dataset generated in {root}")
        try:
            report = import_dataset(
                root, progress=file_progress("checking demo images", options.get("stderr") or sys.stderr)
            )
        except ImportFailed as error:
            raise CommandError(str(error)) from None
        for line in report.summary_lines():
            self.stdout.write(line)
