"""modelbank: a self-hosted credit economy for AI model platforms."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelbank")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
