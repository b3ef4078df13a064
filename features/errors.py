"""User-facing errors: each message says what is wrong and how to fix it.

The CLI prints these as one line (no traceback); the service turns them into 4xx.
"""


class LeadscoreError(Exception):
    """Base of every error caused by input the user controls (data, mapping, options)."""


class SchemaError(LeadscoreError, ValueError):
    """A whole table is unusable (a required column is absent): fix the mapping."""


class MappingError(LeadscoreError, ValueError):
    """The YAML mapping does not fit the export it describes."""


class DatasetNotFound(LeadscoreError, FileNotFoundError):
    """The --data folder is not in the canonical layout."""


class NotEnoughData(LeadscoreError, ValueError):
    """Too little history for what was asked (cold start, empty pipeline, no period)."""
