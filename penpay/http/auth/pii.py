"""Encryption of PII at rest (AES-256-GCM) and blind indexes for lookups (reliability.md §3.6).

Encryption: ``nonce (12 bytes) || ciphertext+tag``, with associated data
``b"<purpose>|<row id>"`` (for example ``users.phone|0193…``), so a
ciphertext copied into another row or column fails to decrypt. Keys are
versioned; the highest version encrypts, every version decrypts, and the
version is stored next to the ciphertext so keys can be rotated.

Blind index: ``HMAC-SHA256(K_bi, purpose || 0x00 || value)`` truncated to 16
bytes. Equal values give equal indexes, which is what lookups and rate-limit
keys need; it leaks equality and frequency and nothing else. Kenyan mobile
numbers are only about 2e8 values, so whoever holds ``K_bi`` can enumerate them:
keep it out of the database and its backups.

Keys come from ``PENPAY_PII_ENCRYPTION_KEYS`` (``"1:<base64 32 bytes>,2:…"``)
and ``PENPAY_PII_BLIND_INDEX_KEY`` (base64, ≥ 32 bytes); without them, they
are generated on first run into ``var/keys/`` for development.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from penpay.errors import ConfigurationError, PenPayError
from penpay.http.auth.keyfiles import keys_dir, load_or_create

NONCE_BYTES = 12
KEY_BYTES = 32
BLIND_INDEX_BYTES = 16
ENCRYPTION_KEYS_ENV = "PENPAY_PII_ENCRYPTION_KEYS"
BLIND_INDEX_KEY_ENV = "PENPAY_PII_BLIND_INDEX_KEY"


class DecryptionFailed(PenPayError):
    """The ciphertext was altered, moved to another row, or the key version is unknown."""


def _parse_keyring(text: str, source: str) -> dict[int, bytes]:
    keys: dict[int, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        version, _, encoded = item.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
            number = int(version)
        except ValueError:
            raise ConfigurationError(f"{source}: expected 'version:base64key' items") from None
        if len(key) != KEY_BYTES or number < 1:
            raise ConfigurationError(f"{source}: key {version} must be {KEY_BYTES} bytes")
        keys[number] = key
    if not keys:
        raise ConfigurationError(f"{source}: no keys")
    return keys


class PiiCipher:
    """Encrypt, decrypt and blind-index PII. Build with :func:`load_pii_cipher`."""

    def __init__(self, encryption_keys: Mapping[int, bytes], blind_index_key: bytes) -> None:
        if not encryption_keys:
            raise ConfigurationError("at least one PII encryption key is needed")
        if len(blind_index_key) < KEY_BYTES:
            raise ConfigurationError(f"the blind-index key must be at least {KEY_BYTES} bytes")
        self._keys = {v: AESGCM(k) for v, k in encryption_keys.items()}
        self.current_version = max(encryption_keys)
        self._bi_key = blind_index_key

    @staticmethod
    def _aad(purpose: str, row_id: str) -> bytes:
        return f"{purpose}|{row_id}".encode()

    def encrypt(self, plaintext: str, *, purpose: str, row_id: str, nonce: bytes) -> bytes:
        """``nonce || AES-GCM(plaintext)``; ``nonce`` must be 12 fresh random bytes."""
        assert len(nonce) == NONCE_BYTES, "AES-GCM nonces are 96 bits"
        sealed = self._keys[self.current_version].encrypt(
            nonce, plaintext.encode(), self._aad(purpose, row_id)
        )
        return nonce + sealed

    def decrypt(self, blob: bytes, *, key_version: int, purpose: str, row_id: str) -> str:
        cipher = self._keys.get(key_version)
        if cipher is None:
            raise DecryptionFailed(f"no PII key version {key_version}")
        try:
            plain = cipher.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(purpose, row_id)
            )
        except InvalidTag:
            raise DecryptionFailed(f"{purpose} of {row_id} does not authenticate") from None
        return plain.decode()

    def blind_index(self, value: str, *, purpose: str) -> bytes:
        """A 16-byte keyed digest of ``value`` for equality lookups; never reversible."""
        message = purpose.encode() + b"\x00" + value.encode()
        return hmac.new(self._bi_key, message, hashlib.sha256).digest()[:BLIND_INDEX_BYTES]


def load_pii_cipher(data_dir: Path, environ: Mapping[str, str] | None = None) -> PiiCipher:
    """Keys from the environment, else from (or generated into) ``data_dir/keys/``."""
    env = os.environ if environ is None else environ
    if env.get(ENCRYPTION_KEYS_ENV):
        keyring = _parse_keyring(env[ENCRYPTION_KEYS_ENV], ENCRYPTION_KEYS_ENV)
    else:
        text = load_or_create(
            keys_dir(data_dir) / "pii-encryption.keys",
            lambda: b"1:" + base64.b64encode(secrets.token_bytes(KEY_BYTES)),
        )
        keyring = _parse_keyring(text.decode(), "var/keys/pii-encryption.keys")
    if env.get(BLIND_INDEX_KEY_ENV):
        try:
            bi_key = base64.b64decode(env[BLIND_INDEX_KEY_ENV], validate=True)
        except ValueError:
            raise ConfigurationError(f"{BLIND_INDEX_KEY_ENV} must be base64") from None
    else:
        bi_key = base64.b64decode(
            load_or_create(
                keys_dir(data_dir) / "pii-blind-index.key",
                lambda: base64.b64encode(secrets.token_bytes(KEY_BYTES)),
            )
        )
    return PiiCipher(keyring, bi_key)
