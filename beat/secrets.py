"""`${NAME}` references in configuration values, resolved from a secrets file or the environment.

So passwords and API keys stay out of the YAML, as in beats: `${NAME}` is
replaced by the value of NAME in the secrets file (`keystore.path`), else in
the environment; `${NAME:default}` gives a default when neither has it.
`$${` is a literal `${`. The secrets file holds `NAME=value` lines (blank
lines and `#` comments allowed) and must not be readable by group or others,
like an SSH key. A missing name is a ConfigError naming the key that used it;
no error message ever quotes a resolved value.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import Any

__all__ = ["SecretsError", "expand", "load_secrets"]

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_.]*)(?::([^}]*))?\}")


class SecretsError(Exception):
    """A reference cannot be resolved or the secrets file is unusable (one line)."""


def load_secrets(path: str) -> dict[str, str]:
    """NAME=value pairs of a secrets file. Raises SecretsError."""
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise SecretsError(f"keystore.path {path}: {err.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(f"keystore.path {path}: readable by group or others "
                           f"(mode {stat.S_IMODE(info.st_mode):o}); chmod 600 it")
    secrets: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            # The line is not quoted: it may hold a secret.
            raise SecretsError(f"keystore.path {path}: line {number} is not NAME=value")
        secrets[name.strip()] = value.strip()
    return secrets


def expand(key: str, value: Any, secrets: Mapping[str, str]) -> Any:
    """`value` with every ${NAME} replaced, in strings nested in lists and mappings too."""
    if isinstance(value, str):
        return _expand_text(key, value, secrets)
    if isinstance(value, list):
        return [expand(f"{key}[{i}]", item, secrets) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {k: expand(f"{key}.{k}", item, secrets) for k, item in value.items()}
    return value


def _expand_text(key: str, text: str, secrets: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in secrets:
            return secrets[name]
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise SecretsError(f"config key '{key}': ${{{name}}} is in neither the secrets file "
                           "nor the environment")
    return _REFERENCE.sub(replace, text)
