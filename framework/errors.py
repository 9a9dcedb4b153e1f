"""Every error a user should see derives from :class:`FrameworkError`: the CLI catches that one class
and prints its one-line message (exit status 2); anything else is a bug and keeps its traceback.

A capability adds its own errors here or in its package, always as subclasses of FrameworkError.
"""


class FrameworkError(Exception):
    """An error the user can act on; its message is one line and says what to change."""


class ConfigError(FrameworkError, ValueError):
    """An invalid or impossible setting, raised before any compute.

    ``field`` is the dotted config path (``task.L``, ``models.mlp.hidden``); the message is one line.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its field placed under ``prefix`` (``models.lstm`` + ``d_model``)."""
        return ConfigError(f"{prefix}.{self.field}" if prefix else self.field, self.message)


class CheckpointError(FrameworkError, RuntimeError):
    """A checkpoint that is corrupt, unsafe, or not ours: refused, never half-loaded."""


class ProbeError(FrameworkError, ValueError):
    """A probe that cannot run on this model, task or input; raised before any compute."""


class NonFiniteLoss(FrameworkError, RuntimeError):
    """Training diverged; the last good checkpoint is kept."""


def require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(field, message)
