"""``Trust``: the signing decisions of one repository: which records count, and who may write.

The cryptography is ``signing.Signer``'s (pure); this module applies it to what a repository holds:
with a key only records whose signature verifies count, and a signed repository (its ``signing.json``
marker, or signed records when the marker was deleted) refuses writes without its key.

It also keeps the signer's :class:`~sb3_iter_ckpt.common.signing.Binding` to this repository up to date
from the marker, and creates it at the first signed write: a new repository gets a random identity, a
repository signed by an earlier version (a format-1 marker) gets one plus the list of its items signed
until then (``legacy``), so that from then on an item copied from another repository signed with the same
key fails wherever it is read.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator, Mapping

from sb3_iter_ckpt.common import record as rec
from sb3_iter_ckpt.common.record import Checkpoint
from sb3_iter_ckpt.common.signing import (
    HOW_TO_GIVE_KEY,
    MARKER,
    REPOSITORY_FIELD,
    Binding,
    Signer,
    marker_fingerprint,
    new_repository_id,
)
from sb3_iter_ckpt.errors import CheckpointError, CheckpointExistsError, IntegrityError, SigningKeyError
from sb3_iter_ckpt.store.index import RecordIndex
from sb3_iter_ckpt.store.storage import Storage


class Trust:
    """The signing decisions over one repository's storage.

    :param storage: Where ``signing.json`` lives.
    :param signer: The key, or None (then every record counts, and a signed repository is read-only).
    :param where: The repository's root, for messages.
    """

    def __init__(self, storage: Storage, signer: Signer | None, where: object) -> None:
        self.storage = storage
        self.signer = signer
        self.where = where
        # record file -> (parsed record, the binding checked against, verifies)
        self._sig_ok: dict[str, tuple[Checkpoint, object, bool]] = {}
        self._tls = threading.local()  # .authorized: inside a write already checked (refresh)
        # A keyless writer looks at the records once: then none was signed, and what it writes is unsigned
        # too; a keyed writer arriving later writes the marker, which every check reads.
        self._no_signed_records = False

    def trusted(self, good: Mapping[int, Checkpoint]) -> dict[int, Checkpoint]:
        """With a key: only the records whose signature verifies (checked once per parsed record)."""
        if self.signer is None:
            return dict(good)
        out: dict[int, Checkpoint] = {}
        for i, ck in good.items():
            hit = self._sig_ok.get(ck.record_file)
            if hit is None or hit[0] is not ck or hit[1] is not self.signer.binding:
                hit = (ck, self.signer.binding, self.signer.verifies(ck.record))
                self._sig_ok[ck.record_file] = hit
            if hit[2]:
                out[i] = ck
        return out

    def read_marker(self) -> tuple[bool, str | None]:
        """(present, key fingerprint) of ``signing.json``; a damaged marker is present, fingerprint None.
        With the key, the signer's binding follows what the marker holds."""
        try:  # one read (one request on object storage), not an existence check first
            data = self.storage.read_bytes(MARKER)
        except IntegrityError as exc:
            return not isinstance(exc.__cause__, FileNotFoundError), None
        fingerprint = marker_fingerprint(data)
        if self.signer is not None and fingerprint == self.signer.fingerprint:
            binding = self.signer.binding_of(data)
            if binding != self.signer.binding:  # the same object while it holds: the signature checks stay cached
                self.signer.binding = binding
        return True, fingerprint

    def _signatures(self, records: Mapping[int, Checkpoint]) -> tuple[list[str], Counter[str]]:
        """Signatures of the items signed before a binding (records and forward files that verify with no
        binding), and the ``repository`` fields of those that carry one."""
        assert self.signer is not None
        saved, self.signer.binding = self.signer.binding, None
        try:
            legacy: list[str] = []
            owners: Counter[str] = Counter()
            bodies = [c.record for c in records.values()]
            for name in self.storage.listdir(rec.CHECKPOINTS_DIR, prefixes=(rec.FORWARD_PREFIX,)):
                with contextlib.suppress(CheckpointError, ValueError, RecursionError):
                    body = json.loads(self.storage.read_bytes(f"{rec.CHECKPOINTS_DIR}/{name}"))
                    bodies.append(body if isinstance(body, dict) else {})
            for body in bodies:
                if "signature" not in body or not self.signer.verifies(body):
                    continue
                owner = body.get(REPOSITORY_FIELD)
                if isinstance(owner, str):
                    owners[owner] += 1
                else:
                    legacy.append(body["signature"])
            return legacy, owners
        finally:
            self.signer.binding = saved

    def _bind(self, index: RecordIndex, replace: bool) -> None:
        """Write a format-2 marker: the repository's identity (the one its bound records carry, else a new
        one) and the signatures of its items signed before (by an earlier version)."""
        assert self.signer is not None
        legacy, owners = self._signatures(index.scan()[0])
        if owners:
            rid = owners.most_common(1)[0][0]
        elif legacy:
            # Upgrading a repository signed by an earlier version overwrites its marker, which no create-only
            # write can guard: the identity is derived from what it holds, so that two writers upgrading at
            # once (which see the same items) write the same one.
            rid = self.signer.sign({"kind": "repository id of an upgraded repository", "legacy": sorted(legacy)})[:32]
        else:
            rid = new_repository_id()
        data = self.signer.marker(rid, legacy)
        if replace:
            self.storage.write_atomic(MARKER, data)
        else:
            try:  # create-only: two first writers never leave two identities
                self.storage.publish([], MARKER, data, conflicts=[MARKER])
            except CheckpointExistsError:
                self.read_marker()
                return
        self.signer.binding = self.signer.binding_of(data)

    def recover_binding(self, good: Mapping[int, Checkpoint]) -> None:
        """Without a readable marker: bind to the identity the signed records carry (the most common one),
        so that a deleted marker does not let another repository's records in; ``verify`` reports it."""
        if self.signer is None or self.signer.binding is not None:
            return
        owners = self._signatures(good)[1]
        if owners:
            self.signer.binding = Binding(owners.most_common(1)[0][0])

    def wrong_key(self) -> SigningKeyError:
        return SigningKeyError(
            f"{self.where} is signed with another key (wrong signature fingerprint in {MARKER}); "
            f"give the key that signed it: {HOW_TO_GIVE_KEY}"
        )

    def check_key(self, index: RecordIndex) -> None:
        """At open: a key that is not the marker's is refused (an unreachable marker is checked at each write);
        the signer is bound to the marker's identity, or without a marker to the one its records carry."""
        if self.signer is None:
            return
        try:
            present, fingerprint = self.read_marker()
        except (OSError, CheckpointError):
            return  # unreachable now: every write checks again
        if present and fingerprint is not None and fingerprint != self.signer.fingerprint:
            raise self.wrong_key()
        if not present:
            self.recover_binding(index.scan()[0])

    @contextlib.contextmanager
    def authorized(self) -> Iterator[None]:
        """Inside: the writes of this thread need no second check (one already passed)."""
        self._tls.authorized = True
        try:
            yield
        finally:
            self._tls.authorized = False

    def authorize_write(self, index: RecordIndex) -> None:
        """Before a write: a signed repository needs its key, and a key must be the repository's.

        Signed means a ``signing.json`` marker or, when it was deleted, records carrying signatures
        (the records are looked at only without a marker: the index's cached scan, also before a
        commit, so that deleting the marker never lets a writer without the key publish).
        With the key and no marker, the marker is (re)written, unless no signed record verifies.
        """
        if getattr(self._tls, "authorized", False):
            return
        present, fingerprint = self.read_marker()
        if self.signer is None:
            if present or (
                not self._no_signed_records and any("signature" in c.record for c in index.scan()[0].values())
            ):
                why = f"it has {MARKER}" if present else f"its records are signed ({MARKER} was deleted)"
                raise SigningKeyError(
                    f"{self.where} is a signed repository ({why}): writing to it without the key would leave "
                    f"unsigned records or strip signatures; {HOW_TO_GIVE_KEY}"
                )
            self._no_signed_records = True  # commits stay O(1): no listing of the folder at each one
            return
        if present:
            if fingerprint != self.signer.fingerprint:
                raise self.wrong_key()
            binding = self.signer.binding
            if binding is not None and binding.problem is not None:
                raise SigningKeyError(f"{self.where}'s {MARKER} {binding.problem}; nothing is written to it")
            if binding is None:
                self._bind(index, replace=True)  # signed by an earlier version: bind what it holds now
            return
        saved, self.signer.binding = self.signer.binding, None
        signed = [c for c in index.scan()[0].values() if "signature" in c.record]
        verifying = [c for c in signed if self.signer.verifies(c.record)]
        self.signer.binding = saved
        if signed and not verifying:
            raise SigningKeyError(
                f"{self.where}'s signed records fail with this key (wrong signature key?) and its {MARKER} "
                f"is missing; give the key that signed them: {HOW_TO_GIVE_KEY}"
            )
        self._bind(index, replace=False)
