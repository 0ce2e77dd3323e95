"""wirebeat's engine: sources, link/IP layers, dispatch, pipeline, outputs, CLI."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wirebeat")
except PackageNotFoundError:      # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
