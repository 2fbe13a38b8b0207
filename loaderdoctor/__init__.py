"""loaderdoctor: diagnostic profiler for PyTorch DataLoader stalls and throughput."""

__version__ = "0.1.0"

__all__ = ["__version__", "assert_loader_healthy", "LoaderUnhealthy", "probe"]


def __getattr__(name):
    # Lazy: `import loaderdoctor` must stay cheap (it is imported by spawned workers).
    if name in ("assert_loader_healthy", "LoaderUnhealthy", "probe", "LiveReport"):
        from loaderdoctor import live as inprocess

        return getattr(inprocess, name)
    raise AttributeError(name)
