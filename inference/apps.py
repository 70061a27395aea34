from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Benchmarks"

    def ready(self):
        # The home board's benchmark column: registered from here so that the labelling app
        # never imports the benchmark app (the import arrow runs inference -> annotator only).
        from annotator.services.board import add_product_section
        from inference.services.board import product_benchmarks

        add_product_section("benchmarks", product_benchmarks)
