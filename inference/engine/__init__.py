"""DefectBench ML engine: Django-free anomaly-localisation benchmarking.

Public API (a contract with the Django side)::

    from inference.engine import Sample, BenchmarkConfig, BenchmarkCancelled, run_benchmark
"""

from .types import BenchmarkCancelled, BenchmarkConfig, Sample, samples_from_scan


def run_benchmark(train, test, config, progress=None, should_cancel=None, artifacts_dir=None, save_model=None,
                  on_detail=None) -> dict:
    """Fit and evaluate one model; see :func:`inference.engine.runner.run_benchmark`.

    Imported lazily so that ``import inference.engine`` stays cheap (no torch import).
    """
    from .runner import run_benchmark as _run

    return _run(train, test, config, progress=progress, should_cancel=should_cancel, artifacts_dir=artifacts_dir,
                save_model=save_model, on_detail=on_detail)


__all__ = ["Sample", "BenchmarkConfig", "BenchmarkCancelled", "run_benchmark", "samples_from_scan"]
