"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user (missing file, malformed line, unknown model, value out of range).

    The CLI prints ``tokenskip: error: <message>`` and exits with status 2, without a traceback.
    """
