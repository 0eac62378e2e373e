"""Identity and authentication for the HTTP API.

Public API:

* :class:`AuthService` (register, login, refresh, logout, set_status,
  link_deriv) and :func:`create_admin`; build one with :func:`build_auth`.
* :func:`require_user`, :func:`admin_only`, :func:`authenticated`, :class:`Principal`.
* :class:`TokenAuthority`, :class:`KeySet`, :func:`load_keyset`.
* :class:`PiiCipher`, :func:`load_pii_cipher`; :class:`Passwords`.
* :func:`normalize_kenyan_msisdn`, :func:`mask_msisdn`.
"""

from penpay.http.auth.factory import build_auth
from penpay.http.auth.guards import Principal, admin_only, authenticated, require_user
from penpay.http.auth.passwords import Passwords
from penpay.http.auth.phone import InvalidPhoneNumber, mask_msisdn, normalize_kenyan_msisdn
from penpay.http.auth.pii import PiiCipher, load_pii_cipher
from penpay.http.auth.service import (
    AuthError,
    AuthService,
    TokenPair,
    create_admin,
)
from penpay.http.auth.tokens import InvalidToken, KeySet, TokenAuthority, load_keyset

__all__ = [
    "AuthError",
    "AuthService",
    "InvalidPhoneNumber",
    "InvalidToken",
    "KeySet",
    "Passwords",
    "PiiCipher",
    "Principal",
    "TokenAuthority",
    "TokenPair",
    "admin_only",
    "authenticated",
    "build_auth",
    "create_admin",
    "load_keyset",
    "load_pii_cipher",
    "mask_msisdn",
    "normalize_kenyan_msisdn",
    "require_user",
]
