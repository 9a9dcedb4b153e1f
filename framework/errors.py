"""The one exception a user sees for a bad setting: it names the field and what is allowed."""


class ConfigError(ValueError):
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


def require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(field, message)
