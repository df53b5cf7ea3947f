"""HMAC signing of metrics records, and the marker that says a repository is signed. Pure: no file I/O.

A ``Signer`` holds the key and computes, for a record dict, the HMAC-SHA256 of the whole record
(every field but ``signature``) in a canonical JSON form. The key's *fingerprint* (an HMAC of a
fixed string, never the key) goes into the repository's marker file ``signing.json``, so that a
signed repository says so and a wrong key is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from sb3_iter_ckpt.common.record import to_jsonable
from sb3_iter_ckpt.errors import SignatureError

#: Environment variable holding the HMAC signing key.
SIGNING_KEY_ENV = "SB3_ITER_CKPT_SIGNING_KEY"
#: The CLI option that reads the key from a file (named in error messages).
KEY_FILE_OPTION = "--signing-key-file"
#: The marker at a signed repository's root.
MARKER = "signing.json"
#: How to give the key, for error messages.
HOW_TO_GIVE_KEY = f"set {SIGNING_KEY_ENV}, pass {KEY_FILE_OPTION} PATH (CLI) or signing_key= (Python)"

_FINGERPRINT_MESSAGE = b"sb3-iter-ckpt signing key fingerprint v1"
_MARKER_KIND = "sb3-iter-ckpt signed repository"


class Signer:
    """Signs and checks metrics records with one HMAC-SHA256 key.

    :param key: The key, bytes or str (a str is UTF-8 encoded, so ``"k"`` and ``b"k"`` are the same key).
    """

    def __init__(self, key: bytes | str) -> None:
        raw = key.encode() if isinstance(key, str) else key
        if not isinstance(raw, bytes) or not raw:
            raise SignatureError(f"the signing key must be non-empty bytes or str; {HOW_TO_GIVE_KEY}")
        self._key = raw

    def __repr__(self) -> str:
        return f"Signer(fingerprint={self.fingerprint[:12]}...)"  # never the key

    @property
    def key(self) -> bytes:
        """The key itself, to hand to another process of the same user (never written anywhere)."""
        return self._key

    @property
    def fingerprint(self) -> str:
        """Hex HMAC of a fixed string: identifies the key without revealing it."""
        return hmac.new(self._key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()

    def sign(self, record: Mapping[str, Any]) -> str:
        """The signature of ``record`` (its ``signature`` field, if any, left out)."""
        # The whole record is signed (artifact hashes, metrics, selection...), so an edited metric
        # cannot promote another model to "best" unnoticed.
        unsigned = {k: v for k, v in record.items() if k != "signature"}
        payload = json.dumps(to_jsonable(unsigned), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def signed(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` with a fresh ``signature``."""
        out = {k: v for k, v in record.items() if k != "signature"}
        out["signature"] = self.sign(out)
        return out

    def check(self, record: Mapping[str, Any], iteration: int) -> None:
        """Raise ``SignatureError`` unless ``record`` carries this key's signature of itself."""
        sig = record.get("signature")
        if not isinstance(sig, str):
            raise SignatureError(f"iteration {iteration} is not signed and a signing key is configured")
        try:
            expected = self.sign(record)
        except (ValueError, TypeError, RecursionError):  # a value strict JSON refuses: we never signed it
            expected = ""
        # compare_digest raises TypeError on non-ASCII str: a forged non-ASCII value is just wrong
        if not (expected and sig.isascii() and hmac.compare_digest(sig, expected)):
            raise SignatureError(f"iteration {iteration} has a wrong signature")

    def verifies(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record``'s signature is this key's."""
        try:
            self.check(record, -1)
        except SignatureError:
            return False
        return True

    def marker(self) -> bytes:
        """The content of ``signing.json``: what the repository is and the key's fingerprint."""
        body = {
            "kind": _MARKER_KIND,
            "algorithm": "hmac-sha256",
            "key_fingerprint": self.fingerprint,
            "note": f"records here are signed; open with the key ({HOW_TO_GIVE_KEY}); do not delete",
        }
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"


def marker_fingerprint(data: bytes) -> str | None:
    """The key fingerprint a marker's bytes hold, or None when they are not a marker of ours."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    fp = body.get("key_fingerprint") if isinstance(body, dict) and body.get("kind") == _MARKER_KIND else None
    return fp if isinstance(fp, str) else None
