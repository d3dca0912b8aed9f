"""LLM Engine's server: gateway, orchestrators, async worker and the built-in inference server."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one version string: pyproject.toml's, as installed.
    __version__ = version("model-engine-server")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
