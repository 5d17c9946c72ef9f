"""lrbs: the learning-rate & batch-size lab. The engine; it never imports a UI."""

from lrbs.core.errors import ConfigError, DataUnavailable, LrbsError

__all__ = ["ConfigError", "DataUnavailable", "LrbsError"]
__version__ = "0.1.0"
