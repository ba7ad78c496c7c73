"""The one exception type for problems the user can fix (bad config, bad data, unknown model)."""


class StropError(Exception):
    """A problem with the user's input. The CLI prints its message (no traceback) and exits with 2.

    Messages name the problem and the fix, e.g.
    "data.train: column 'text' not found in train.csv; columns found: sentence, label. Set data.text_column=sentence".
    """

    exit_code = 2
