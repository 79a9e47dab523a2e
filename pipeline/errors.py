"""One exception type per layer; messages name the file, the row or id, and what was expected."""


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class DataError(PipelineError):
    """Input data (a source folder, a table, a feature matrix) is missing or malformed."""


class ParamsError(PipelineError):
    """A params group holds an unknown key or a value out of range."""


class MediaError(PipelineError):
    """A media file cannot be decoded or rendered."""
