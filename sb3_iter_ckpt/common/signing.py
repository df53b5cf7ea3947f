"""HMAC signing of metrics records, and the marker that says a repository is signed. Pure: no file I/O.

A ``Signer`` holds the key and computes, for a record dict, the HMAC-SHA256 of the whole record
(every field but ``signature``) in a canonical JSON form. The key's *fingerprint* (an HMAC of a
fixed string, never the key) goes into the repository's marker file ``signing.json``, so that a
signed repository says so and a wrong key is refused before anything is written.

One key may sign many repositories, so a signature alone does not say *which* repository a record
belongs to. The marker (format 2) therefore holds a random ``repository_id``, created at the first signed
write, and every record and forward file signed afterwards carries it in a signed ``repository`` field.
Items signed before the binding existed (by an earlier version) are listed in the marker's ``legacy``
field by their signatures; the marker itself is signed. A :class:`Binding` set on the signer makes
:meth:`Signer.check` refuse an item of another repository, so every reader applies it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
#: The marker format that binds records to one repository (format 1: no ``repository_id``).
MARKER_FORMAT = 2
#: Hex digits of a signature kept in the marker's ``legacy`` list (128 bits: an HMAC cannot be aimed at it).
LEGACY_DIGITS = 32
#: The signed field that names the repository a record or forward file belongs to.
REPOSITORY_FIELD = "repository"


@dataclass(frozen=True)
class Binding:
    """The repository a signer checks items against (from a format-2 ``signing.json``).

    :param repository_id: What the ``repository`` field of every item signed since the binding holds.
    :param legacy: Signature prefixes (``LEGACY_DIGITS``) of the items signed before it, by an earlier version.
    :param problem: Why the marker cannot be trusted (edited, or signed by another key): then every check fails.
    """

    repository_id: str
    legacy: frozenset[str] = frozenset()
    problem: str | None = None


def new_repository_id() -> str:
    return secrets.token_hex(16)


class Signer:
    """Signs and checks metrics records with one HMAC-SHA256 key.

    :param key: The key, bytes or str (a str is UTF-8 encoded, so ``"k"`` and ``b"k"`` are the same key).
    """

    def __init__(self, key: bytes | str) -> None:
        raw = key.encode() if isinstance(key, str) else key
        if not isinstance(raw, bytes) or not raw:
            raise SignatureError(f"the signing key must be non-empty bytes or str; {HOW_TO_GIVE_KEY}")
        self._key = raw
        #: The repository this signer checks items against (set by the repository from its marker).
        self.binding: Binding | None = None

    def for_repository(self) -> Signer:
        """A signer of the same key for one repository (its own binding; the caller's object untouched)."""
        return Signer(self._key)

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

    def stamp(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with its ``repository`` field (when bound) and signature, in place."""
        if self.binding is not None and self.binding.problem is None:
            record[REPOSITORY_FIELD] = self.binding.repository_id
        record["signature"] = self.sign(record)
        return record

    def check(self, record: Mapping[str, Any], iteration: int) -> None:
        """Raise ``SignatureError`` unless ``record`` carries this key's signature of itself and, when the
        signer is bound, belongs to its repository (its ``repository`` field, or a legacy signature)."""
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
        b = self.binding
        if b is None:
            return
        if b.problem is not None:
            raise SignatureError(f"iteration {iteration} cannot be checked: {MARKER} {b.problem}")
        owner = record.get(REPOSITORY_FIELD)
        if owner is None and sig[:LEGACY_DIGITS] in b.legacy:
            return
        if owner != b.repository_id:
            whose = "no repository" if owner is None else "another repository"
            raise SignatureError(
                f"iteration {iteration} is signed with this key but for {whose} (copied from another experiment?)"
            )

    def verifies(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record``'s signature is this key's (and, when bound, it belongs to the repository)."""
        try:
            self.check(record, -1)
        except SignatureError:
            return False
        return True

    def marker(self, repository_id: str | None = None, legacy: Iterable[str] = ()) -> bytes:
        """The content of ``signing.json``: what the repository is and the key's fingerprint; with
        ``repository_id`` (format 2) also the repository's identity and its legacy items' signatures
        (prefixes), the whole signed."""
        body: dict[str, Any] = {
            "kind": _MARKER_KIND,
            "algorithm": "hmac-sha256",
            "key_fingerprint": self.fingerprint,
            "note": f"records here are signed; open with the key ({HOW_TO_GIVE_KEY}); do not delete",
        }
        if repository_id is not None:
            body["format"] = MARKER_FORMAT
            body["repository_id"] = repository_id
            body["legacy"] = sorted({s[:LEGACY_DIGITS] for s in legacy})
            body["signature"] = self.sign(body)
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    def binding_of(self, data: bytes) -> Binding | None:
        """The binding a marker's bytes hold for this key: None for a format-1 marker (nothing bound yet)."""
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(body, dict) or "repository_id" not in body:
            return None
        rid, legacy = body.get("repository_id"), body.get("legacy")
        ok = isinstance(rid, str) and isinstance(legacy, list) and all(isinstance(s, str) for s in legacy)
        if not ok or not self.verifies_marker(body):
            return Binding(str(rid), frozenset(), problem="is edited or not signed by this key (its signature fails)")
        return Binding(str(rid), frozenset(str(s) for s in legacy or ()))

    def verifies_marker(self, body: Mapping[str, Any]) -> bool:
        sig = body.get("signature")
        try:
            expected = self.sign(body)
        except (ValueError, TypeError, RecursionError):
            return False
        return isinstance(sig, str) and sig.isascii() and hmac.compare_digest(sig, expected)


def marker_fingerprint(data: bytes) -> str | None:
    """The key fingerprint a marker's bytes hold, or None when they are not a marker of ours."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    fp = body.get("key_fingerprint") if isinstance(body, dict) and body.get("kind") == _MARKER_KIND else None
    return fp if isinstance(fp, str) else None
