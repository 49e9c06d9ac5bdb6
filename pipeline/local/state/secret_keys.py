"""Keys a home keeps for itself (the local stand-ins for the stack's Secrets Manager secrets)."""
from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def write_secret_key(path: Path) -> bytes:
    """A random key kept in ``path`` (made once, readable by its owner only), as hex text: what
    signs a home's answers for feedback. Two processes that make it at once keep one of the two."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp makes it 0600
            handle.write(secrets.token_hex(32).encode("ascii"))
        os.link(tmp, path)  # fails if another process made it first: then theirs is the key
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path.read_bytes().strip()
