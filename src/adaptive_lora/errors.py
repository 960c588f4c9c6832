"""User-facing errors: one line that names what is wrong and how to fix it.

The CLI prints `error: <message>` and exits with code 2 for any `UserError`; library code raises
it instead of letting a traceback from deep inside transformers/PEFT/datasets reach the user.
"""


class UserError(ValueError):
    """Bad input from the user (file, field, flag or value). The message is one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UnsupportedModelError(UserError):
    """The model's structure cannot be planned correctly (e.g. mixture-of-experts)."""
