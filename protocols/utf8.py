"""A string's UTF-8 bytes without copying them, where the interpreter already keeps them.

Owns :func:`utf8`, used wherever a large ``str`` leaves the process as bytes (the codec's text
blob frames, the daemon's record files). CPython stores an ASCII-only string's characters as
one byte each, which is also its UTF-8 form: for such a string :func:`utf8` is a read-only
``memoryview`` of that storage, which keeps the string alive as long as it is used (a frame
sent with ``copy=False`` holds it until ZeroMQ has sent it). Any other string (or another
interpreter) gets ``str.encode``: a copy, as before. A 16 MiB text value through the daemon
was encoded twice more (its reply frame and its record file) and through pnsweb once more;
the figures are in bench/FINDINGS.md.

Imports only the stdlib; Python 3.6 compatible (the stdio worker runtime imports the codec).
"""

import ctypes
import platform
import sys
from typing import Any, Optional, Union

__all__ = ["VIEW_FROM", "utf8"]

VIEW_FROM = 4096    # characters: shorter strings are encoded (a view costs more than the copy)


def _as_utf8() -> Optional[Any]:
    # str.isascii and memoryview.toreadonly are 3.8's (the stdio runtime may be older)
    if platform.python_implementation() != "CPython" or sys.version_info < (3, 8):
        return None
    try:
        function = ctypes.pythonapi.PyUnicode_AsUTF8AndSize
    except AttributeError:
        return None
    function.restype = ctypes.c_void_p
    function.argtypes = [ctypes.py_object, ctypes.POINTER(ctypes.c_ssize_t)]
    return function


_AS_UTF8 = _as_utf8()


def utf8(text: str) -> Union[bytes, memoryview]:
    """``text`` as UTF-8: a read-only view of the string's own bytes when it is ASCII-only
    (and long enough to be worth it) on CPython, else ``text.encode("utf-8")``."""
    if _AS_UTF8 is None or len(text) < VIEW_FROM or not text.isascii():
        return text.encode("utf-8")
    size = ctypes.c_ssize_t()
    address = _AS_UTF8(text, ctypes.byref(size))
    if not address or size.value != len(text):      # cannot happen for ASCII; be safe
        return text.encode("utf-8")
    storage = (ctypes.c_char * size.value).from_address(address)
    # the view keeps the array alive; the array keeps the string
    storage.text = text  # type: ignore[attr-defined]
    return memoryview(storage).cast("B").toreadonly()
