"""Server names: one rule for every store, every config key and every RPC parameter.

A name becomes a file name (`tokens/<name>.json`, `clients/<name>.json`, `locks/<name>.lock`), an opencode
config key and part of an env var name, so it is kept boring: a letter or digit, then letters, digits,
`.`, `_`, `-`, at most 64 in all, and never `..`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_SERVER_NAME_LENGTH = 64
# Matched with `fullmatch`: `$` would let a trailing newline through.
SERVER_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_SERVER_NAME_LENGTH - 1}}}")
SERVER_NAME_HINT = f"use letters, digits, '.', '_' and '-' (at most {MAX_SERVER_NAME_LENGTH})"


def valid_server_name(name: str) -> bool:
    return SERVER_NAME.fullmatch(name) is not None and ".." not in name


def _checked(name: str) -> str:
    if not valid_server_name(name):
        raise ValueError(f"not a server name: {SERVER_NAME_HINT}")
    return name


# For pydantic models that cross a boundary (RPC params, registry entries): a bad name is a validation error.
ServerName = Annotated[str, AfterValidator(_checked)]
