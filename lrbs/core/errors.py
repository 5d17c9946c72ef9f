"""The errors a user may cause. Their message is the whole story: pages show it with
`st.error`, the CLI prints it as one line, tests match on it."""


class LrbsError(Exception):
    """Base of every error lrbs raises on purpose."""


class ConfigError(LrbsError, ValueError):
    """A setting is out of range or inconsistent."""


class DataUnavailable(LrbsError):
    """A dataset is not on this machine; the message says how to get it."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def positive_number(name: str, value: float) -> float:
    """A finite number > 0, or a ConfigError naming the setting."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if x <= 0:
        raise ConfigError(f"{name} must be greater than 0, got {value!r}")
    return x


def positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{name} must be at least 1, got {value!r}")
    return int(value)
