"""wirebeat's engine: sources, link/IP layers, dispatch, pipeline, outputs, CLI."""
from wirebeat import distinfo as _distinfo


def _version() -> str:
    # Read from the metadata directory itself: importlib.metadata is ~30 ms of start-up.
    if _distinfo.usable():
        try:
            return _distinfo.version("wirebeat")
        except _distinfo.NotFound:
            return "0.0.0+unknown"      # running from a source tree that was never installed
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("wirebeat")
    except PackageNotFoundError:
        return "0.0.0+unknown"


__version__ = _version()
