"""Errors a user can fix. The CLI prints them as one line, ``aezoo: error: ...``, and exits with status 2."""


class UserError(Exception):
    """A problem with the user's input: a path, a file, an option, a checkpoint. Never a bug of ours."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
