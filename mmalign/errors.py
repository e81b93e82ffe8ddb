"""Errors a user sees. Each names where the problem is and what to do about it."""


class MmalignError(Exception):
    """Base class: an error the user can act on, not a bug; the CLI prints it as one line.

    ``exit_code`` is what the CLI returns: 2 for bad input (recipe, data, checkpoint).
    """

    exit_code = 2


class ConfigError(MmalignError):
    """A recipe, override or registry name that cannot be used."""


class RunError(MmalignError):
    """A fault of the machine a run writes to (disk full, read-only, permission denied).

    The input was fine, so the CLI exits 1 as for other failures, but with one line naming
    the path and what to do instead of a traceback.
    """

    exit_code = 1


class DataError(MmalignError):
    """A data file, row or field that cannot be used.

    ``str(err)`` reads ``FILE, row N, field 'F': what is wrong. What to do.``
    """

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None, hint: str | None = None):
        where = ", ".join(
            part for part in (
                str(file) if file is not None else None,
                f"row {row}" if row is not None else None,
                f"field '{field}'" if field is not None else None,
            ) if part
        )
        text = f"{where}: {message}" if where else message
        if hint:
            text = f"{text}. {hint}"
        super().__init__(text)
        self.file, self.row, self.field, self.hint = file, row, field, hint
