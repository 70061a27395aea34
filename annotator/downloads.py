"""The ``Content-Disposition`` of a download whose file name comes from data (a dataset's name).

A name is whatever an admin or a zip gave: quotes, CR/LF (which Django refuses in a header, so the
download was a server error), slashes, any script. The header carries an ASCII ``filename`` for
clients that know nothing else and the exact name as RFC 5987 ``filename*``; characters no file
name should hold (control characters, quotes, slashes) become "_" in both.
"""
import re
import unicodedata
from urllib.parse import quote

_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/]')
_NOT_PLAIN_ASCII = re.compile(r"[^A-Za-z0-9 ._()+-]")


def attachment(filename: str) -> str:
    """The header value that makes a browser save the response as ``filename``."""
    name = _UNSAFE.sub("_", filename).strip() or "download"
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    fallback = _NOT_PLAIN_ASCII.sub("_", fallback).strip() or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
