"""User-facing errors: raised for bad input, printed by the CLI without a traceback."""


class M2AError(Exception):
    """A problem the user can fix (bad file, wrong argument, missing data); the message names it."""


class CheckpointError(M2AError):
    """A weights file that cannot be read or does not match the model."""


class DatasetError(M2AError):
    """A dataset folder that is missing or not in the expected layout."""
