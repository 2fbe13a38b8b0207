"""GPUs through NVML (pynvml, from nvidia-ml-py), behind one small interface.

No driver, no library or no device degrades to `available = False` with the reason.
Tests substitute a fake with the same two methods; this was not run on a GPU here.
"""

from __future__ import annotations


class Gpus:
    """devices() -> list of dicts; sample() -> list of {index, util, mem_used_mb, power_w}."""

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        self._nvml = None
        self._handles: list = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            if count == 0:
                self.reason = "NVML found no GPU"
                return
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self.available = True
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError...
            self.reason = f"{type(exc).__name__}: {exc}".strip(": ") or "NVML unavailable"

    def devices(self) -> list[dict]:
        out = []
        for i, h in enumerate(self._handles):
            try:
                name = self._nvml.nvmlDeviceGetName(h)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(h)
                out.append({"index": i, "name": name if isinstance(name, str) else name.decode(),
                            "memory_total_mb": round(mem.total / 2**20)})
            except Exception as exc:
                out.append({"index": i, "error": str(exc)})
        return out

    def sample(self) -> list[dict]:
        out = []
        for i, h in enumerate(self._handles):
            row = {"index": i, "util": None, "mem_used_mb": None, "power_w": None}
            try:
                row["util"] = self._nvml.nvmlDeviceGetUtilizationRates(h).gpu
                row["mem_used_mb"] = round(self._nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20, 1)
                row["power_w"] = round(self._nvml.nvmlDeviceGetPowerUsage(h) / 1000.0, 1)
            except Exception:
                pass
            out.append(row)
        return out
