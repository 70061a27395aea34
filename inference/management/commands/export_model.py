"""Export a model package to ONNX (no database): a thin CLI over ``inference.engine.onnx_export``.

    python manage.py export_model var/media/benchmarks/3/3/model --format onnx --output model.onnx
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inference.engine import registry


class Command(BaseCommand):
    help = ("Export a saved model package ("
            + ", ".join(m.label for m in registry.MODELS.values() if not m.onnx_refusal)
            + ") to ONNX, thresholds and preprocessing in its metadata.")

    def add_arguments(self, parser):
        parser.add_argument("package", type=Path, help="model package folder")
        parser.add_argument("--format", default="onnx", choices=["onnx"])
        parser.add_argument("--output", type=Path, required=True)
        parser.add_argument("--weights-path", default=None, help="backbone weights file on this machine")

    def handle(self, *args, **options):
        from inference.engine.onnx_export import export_onnx
        from inference.engine.package import PackageError, load_package

        try:
            inspector = load_package(options["package"], device="cpu", weights_path=options["weights_path"])
            path = export_onnx(inspector, options["output"])
        except PackageError as error:
            raise CommandError(str(error))
        self.stdout.write(f"Wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
