"""The one exception type for problems the user can fix (bad config, bad data, unknown model)."""


class StropError(Exception):
    """A problem with the user's input. The CLI prints its message (no traceback) and exits with 2.

    Messages name the problem and the fix, e.g.
    "data.train: column 'text' not found in train.csv; columns found: 'sentence', 'label'. Set data.text_column=sentence".
    """

    exit_code = 2


class WriteError(StropError):
    """A run's file could not be written (a full disk, no permission): the machine's problem, not the
    input's, so the CLI exits with 1. The message says what to free or change, and how to continue."""

    exit_code = 1
