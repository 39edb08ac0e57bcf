"""The one error type of the model layer."""


class ModelError(RuntimeError):
    """A model or detector file cannot be used; the message names the file and the reason."""
