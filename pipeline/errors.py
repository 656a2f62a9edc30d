"""The one error type for the user's data (its own leaf module, so data.py and validate.py both use it
without importing each other; pipeline.data re-exports it, where callers have always imported it from)."""


class DataError(ValueError):
    """A problem with the user's data, worded for the user (shown as-is in the dashboard)."""
