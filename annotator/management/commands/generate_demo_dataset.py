"""``manage.py generate_demo_dataset OUT``: the synthetic demo dataset (MVTec layout)."""
from pathlib import Path

from django.core.management.base import BaseCommand

from annotator.services.demo import generate_demo_dataset


class Command(BaseCommand):
    help = "Write the deterministic synthetic demo dataset (products widget and fabric) to OUT."

    def add_arguments(self, parser):
        parser.add_argument("out", type=Path)
        parser.add_argument("--image-size", type=int, default=128)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, out, image_size, seed, **options):
        root = generate_demo_dataset(out, image_size=image_size, seed=seed)
        self.stdout.write(f"Demo dataset written to {root}")
