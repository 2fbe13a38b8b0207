"""GPUs through NVML (pynvml, from nvidia-ml-py), behind one small interface.

No driver, no library or no device degrades to `available = False` with the reason.
Tests substitute a fake with the same two methods; this was not run on a GPU here.
"""

from __future__ import annotations


class Gpus:
    """devices() -> list of dicts; sample() -> list of {index, util, mem_used_mb, power_w,
    sm_mhz, pcie_rx_mb_s, pcie_tx_mb_s} (None where NVML cannot read a field)."""

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
        """Each field read on its own: a field the device or driver does not support (power on
        some boards, PCIe counters in some VMs) stays None without blanking the others."""
        nv = self._nvml
        reads = {
            "util": lambda h: nv.nvmlDeviceGetUtilizationRates(h).gpu,
            "mem_used_mb": lambda h: round(nv.nvmlDeviceGetMemoryInfo(h).used / 2**20, 1),
            "power_w": lambda h: round(nv.nvmlDeviceGetPowerUsage(h) / 1000.0, 1),
            "sm_mhz": lambda h: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
            # KB/s over NVML's last 20 ms window, host to device (RX) and back (TX)
            "pcie_rx_mb_s": lambda h: round(nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_RX_BYTES) / 1024, 1),
            "pcie_tx_mb_s": lambda h: round(nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_TX_BYTES) / 1024, 1),
        }
        out = []
        for i, h in enumerate(self._handles):
            row: dict = {"index": i}
            for key, read in reads.items():
                try:
                    row[key] = read(h)
                except Exception:
                    row[key] = None
            out.append(row)
        return out
