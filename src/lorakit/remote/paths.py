"""rclone's remote paths taken apart as rclone reads them: ``name:path``, ``:backend,opts:path`` or a local path.

rclone treats a string as local when it has no colon, or a ``/`` before its first colon (``/mnt/nas/out``,
``./out``); an on-the-fly remote's options may hold colons inside quotes (``:webdav,url='http://h:80':out``).
"""

from __future__ import annotations


def split_remote(remote: str) -> tuple[str, str]:
    """``(prefix, path)``: the prefix up to and including the colon that ends the remote's name and options
    (empty for a local path), and the path inside it."""
    if remote.startswith(":"):
        quote = None
        for i, char in enumerate(remote[1:], start=1):
            if quote:
                quote = None if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == ":":
                return remote[:i + 1], remote[i + 1:]
        return remote, ""
    colon, slash = remote.find(":"), remote.find("/")
    if colon == -1 or -1 < slash < colon:
        return "", remote
    return remote[:colon + 1], remote[colon + 1:]


def is_local(remote: str) -> bool:
    return split_remote(remote)[0] == ""


def parent(remote: str) -> str:
    """The folder that holds ``remote`` (the remote's root for a top-level folder): what must exist before
    ``remote`` itself is made."""
    prefix, path = split_remote(remote)
    inner = path.rstrip("/")
    if "/" in inner:
        return prefix + (inner.rsplit("/", 1)[0] or "/")
    if prefix:
        return prefix
    return "/" if path.startswith("/") else "."
