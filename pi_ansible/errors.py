"""The project's error base: anything raised as a PiError ends as a one-line `Error: …` at the CLI edge."""


class PiError(Exception):
    """A failure whose message already says what went wrong and what to do."""


class Interrupted(PiError):
    """The user pressed Ctrl+C; the message says what was kept and how to finish (exit code 130)."""

    exit_code = 130
