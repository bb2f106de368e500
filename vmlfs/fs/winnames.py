"""Guest names as Windows can hold them, and back: one reversible mapping for every Windows-facing adapter.

A guest home may hold names no Windows file system (and no Windows WebDAV
client) accepts: ``:*?"<>|\\``, control characters, a trailing dot or space,
device names such as ``CON`` or ``com1.txt``, and bytes that are not UTF-8.
The WinFsp bridge and the WebDAV server show all of them under the mapping
Cygwin and WSL use: an offending character ``c`` (an ASCII code, 0x00-0x7F)
becomes the private-use character U+F000 + c, so ``a:b`` is shown as
``a\\uf03ab`` and the user still reads it as "a:b" in most fonts' fallback.

Two extensions make the mapping total and reversible on bytes:

* a byte that is not part of valid UTF-8 becomes U+F000 + byte (U+F080 to
  U+F0FF, the range ASCII never uses), as Cygwin does for bytes its charset
  cannot convert;
* a name that already holds a character of U+F000 to U+F0FF has that
  character's UTF-8 bytes escaped the same way, so a real private-use name can
  never be confused with an escaped one.

:func:`from_windows` undoes any such escaping, character by character:
U+F000-U+F0FF stand for one byte each, everything else for its UTF-8 bytes.
So ``from_windows(to_windows(b)) == b`` for every name, and a client that
sends a name unescaped (a Linux WebDAV client asking for ``a:b``) still
reaches it. Pure: no I/O, used by :mod:`vmlfs.webdav` and ``winfsp_bridge``.
"""

from __future__ import annotations

import re

ESCAPE_BASE = 0xF000
_ESCAPED = range(ESCAPE_BASE, ESCAPE_BASE + 0x100)
FORBIDDEN = frozenset('\\/:*?"<>|') | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
"""Characters Windows refuses anywhere in a name ('/' never occurs in a guest name; DEL for Explorer)."""
RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
                     | {f"{dev}{n}" for dev in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"})
"""Device names, reserved with any extension (``nul.txt`` too) and whatever their case."""
_UTF8_RUN = re.compile(rb"[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
                       rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
                       rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}")
"""One well-formed UTF-8 character (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF)."""


_PLAIN = re.compile(rb'[^\x00-\x1f\x7f-\xff\\/:*?"<>|]*[^\x00-\x1f\x7f-\xff\\/:*?"<>|. ]')
"""A printable ASCII name Windows accepts as is, unless it is a device name (the common case, kept fast)."""


def _escape(byte: int) -> str:
    return chr(ESCAPE_BASE + byte)


def _chars(name: bytes) -> list[str]:
    """The name as characters, each undecodable byte (or byte of an escape-range character) escaped."""
    out: list[str] = []
    pos = 0
    while pos < len(name):
        match = _UTF8_RUN.match(name, pos)
        if match is None:
            out.append(_escape(name[pos]))
            pos += 1
            continue
        char = match.group().decode()
        if ord(char) in _ESCAPED:
            out.extend(_escape(b) for b in match.group())
        elif char in FORBIDDEN:
            out.append(_escape(ord(char)))
        else:
            out.append(char)
        pos = match.end()
    return out


def is_reserved(name: str) -> bool:
    """Whether Windows takes ``name`` for a device (``CON``, ``lpt1.log``, ``NUL .txt``...)."""
    return name.split(".", 1)[0].rstrip(" ").upper() in RESERVED


def to_windows(name: bytes) -> str:
    """The name a Windows client is shown for guest name ``name`` (a name Windows accepts as is)."""
    if _PLAIN.fullmatch(name) and not is_reserved(plain := name.decode("ascii")):
        return plain
    chars = _chars(name)
    if chars and chars[-1] in (".", " "):
        chars[-1] = _escape(ord(chars[-1]))
    shown = "".join(chars)
    if is_reserved(shown):
        # Every device name starts with an ASCII letter: escaping it ("\uf043ON") frees the whole name.
        shown = _escape(ord(shown[0])) + shown[1:]
    return shown


def from_windows(name: str) -> bytes:
    """The guest name a Windows name stands for (the inverse of :func:`to_windows`, lenient on input)."""
    out = bytearray()
    for char in name:
        code = ord(char)
        if code in _ESCAPED:
            out.append(code - ESCAPE_BASE)
        else:
            out += char.encode("utf-8", "surrogatepass")
    return bytes(out)
