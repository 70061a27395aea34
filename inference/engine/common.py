"""Small shared helpers (blur, memory measurement, seeding)."""

from __future__ import annotations

import random
import resource
import sys
import threading

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian, size 2*int(4*sigma+0.5)+1 (as anomalib / scipy truncate=4)."""
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) maps with reflect padding."""
    k = gaussian_kernel1d(sigma, maps.dtype, maps.device)
    r = (len(k) - 1) // 2
    h, w = maps.shape[-2:]
    if r >= min(h, w):  # reflect padding needs pad < size; fall back to replicate
        mode = "replicate"
    else:
        mode = "reflect"
    x = F.pad(maps, (r, r, 0, 0), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode=mode)
    return F.conv2d(x, k.view(1, 1, -1, 1))


def require_tensors(tensors: dict, names, model: str) -> None:
    """Refuse (ValueError) a stored state that lacks any of ``names``: it is not this model's."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"the stored state has no {', '.join(missing)} tensor(s): it is not a fitted {model}")


def load_module_tensors(module: torch.nn.Module, tensors: dict, prefix: str, what: str) -> None:
    """Load ``module`` from the ``prefix``-named entries of ``tensors`` (strict); a missing, extra or
    mis-shaped tensor is a ValueError that says so (torch's RuntimeError names the tensors)."""
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(own, strict=True)
    except RuntimeError as error:
        raise ValueError(f"the stored {what} does not fit these settings: {str(error)[:400]}") from error


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), or None where there is none."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RunPeakMemory:
    """Peak resident memory of ONE run in MiB, not of the whole process.

    ``ru_maxrss`` is the peak since the process started, so in a long-lived worker a run
    inherits the peak of every earlier run. Here, on Linux, the kernel's high-water mark is
    reset at the start (writing ``5`` to /proc/self/clear_refs) and VmHWM is read at the end;
    where that is not allowed a thread samples RssAnon every ``interval`` seconds and keeps
    the highest value (plus the value at start and stop). Elsewhere it falls back to
    ``ru_maxrss``. ``method`` says which one was used.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.method = "ru_maxrss"
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        value = _status_kib("RssAnon")
        if value is not None and value > self.peak_kib:
            self.peak_kib = value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> "RunPeakMemory":
        if sys.platform.startswith("linux"):
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                if _status_kib("VmHWM") is not None:
                    self.method = "VmHWM after clear_refs"
                    return self
            except OSError:
                pass
            if _status_kib("RssAnon") is not None:
                self.method = "sampled RssAnon"
                self._sample()
                self._thread = threading.Thread(target=self._loop, daemon=True, name="run-peak-memory")
                self._thread.start()
        return self

    def stop(self) -> float:
        """Stop sampling; the run's peak in MiB."""
        if self.method == "VmHWM after clear_refs":
            return (_status_kib("VmHWM") or 0) / 1024
        if self.method == "sampled RssAnon":
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._sample()
            return self.peak_kib / 1024
        return peak_rss_mb()

    def __enter__(self) -> "RunPeakMemory":
        return self.start()

    def __exit__(self, *exc) -> None:
        self._stop.set()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
