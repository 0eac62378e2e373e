"""Typed parsing of everything Daraja sends us, with money kept exact.

JSON numbers are decoded as ``Decimal`` (never ``float``) and amounts become
integer cents through :meth:`penpay.money.Money.parse`, which refuses
sub-cent precision instead of rounding. Quirks handled here, per
protocols.md 1.3-1.7 and 4:

* STK callback metadata items are read **by Name**; ``Balance`` may lack a
  ``Value`` or be text like ``{Amount={BasicAmount=46.00, …}}`` (read
  leniently: PenPay does not use it); ``CallbackMetadata`` exists only on success.
* ``ResultCode`` is a number in callbacks and B2C results and a string in STK
  Query and Account Balance: every ``ResultCode``/``ResponseCode`` is read as
  either and normalised to ``str``.
* ``ResultParameters.ResultParameter`` may be one object instead of a list.
* ``expires_in`` may be ``3599`` or ``"3599"``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from penpay.actors.daraja.errors import DarajaProtocolError
from penpay.money import Currency, Money, MoneyError

# ---- wire structs (Daraja's own field names) ---------------------------------


class TokenResponse(msgspec.Struct, frozen=True):
    access_token: str
    expires_in: int | str


class ErrorEnvelope(msgspec.Struct, frozen=True):
    requestId: str = ""
    errorCode: str = ""
    errorMessage: str = ""


class StkPushAccepted(msgspec.Struct, frozen=True, rename="pascal"):
    """The synchronous answer to STK Push: *accepted*, not *paid*."""

    merchant_request_id: str = msgspec.field(name="MerchantRequestID")
    checkout_request_id: str = msgspec.field(name="CheckoutRequestID")
    response_code: str = "0"
    response_description: str = ""
    customer_message: str = ""


class StkQueryResponse(msgspec.Struct, frozen=True, rename="pascal"):
    """STK Query: ``result_code`` ``"4999"`` means still in flight."""

    merchant_request_id: str = msgspec.field(name="MerchantRequestID", default="")
    checkout_request_id: str = msgspec.field(name="CheckoutRequestID", default="")
    response_code: str = ""
    response_description: str = ""
    result_code: str = ""
    result_desc: str = ""

    @property
    def pending(self) -> bool:
        return self.result_code == "4999"


class AsyncAccepted(msgspec.Struct, frozen=True, rename="pascal"):
    """The acknowledgement of B2C / Transaction Status / Account Balance."""

    conversation_id: str = msgspec.field(name="ConversationID")
    originator_conversation_id: str = msgspec.field(name="OriginatorConversationID")
    response_code: str = "0"
    response_description: str = ""


class _Item(msgspec.Struct, frozen=True):
    Name: str
    Value: Any = None


class _Metadata(msgspec.Struct, frozen=True):
    Item: list[_Item] | _Item = msgspec.field(default_factory=list)


class _StkCallbackWire(msgspec.Struct, frozen=True):
    MerchantRequestID: str
    CheckoutRequestID: str
    ResultCode: int | str
    ResultDesc: str = ""
    CallbackMetadata: _Metadata | None = None


class _StkBody(msgspec.Struct, frozen=True):
    stkCallback: _StkCallbackWire


class _StkEnvelope(msgspec.Struct, frozen=True):
    Body: _StkBody


class _KeyValue(msgspec.Struct, frozen=True):
    Key: str
    Value: Any = None


class _Parameters(msgspec.Struct, frozen=True):
    ResultParameter: list[_KeyValue] | _KeyValue = msgspec.field(default_factory=list)


class _ResultWire(msgspec.Struct, frozen=True):
    ResultCode: int | str
    ResultType: Any = None
    ResultDesc: str = ""
    OriginatorConversationID: str = ""
    ConversationID: str = ""
    TransactionID: str = ""
    ResultParameters: _Parameters | None = None


class _ResultEnvelope(msgspec.Struct, frozen=True):
    Result: _ResultWire


# ---- parsed, PenPay-side shapes ------------------------------------------------


class StkCallback(msgspec.Struct, frozen=True):
    """An STK callback; money fields are set only when ``result_code == "0"``."""

    merchant_request_id: str
    checkout_request_id: str
    result_code: str
    result_desc: str
    amount_cents: int | None = None
    receipt: str | None = None
    transaction_date: str | None = None  # YYYYMMDDHHmmss, Nairobi time
    phone: str | None = None
    balance_cents: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.result_code == "0"


class DarajaResult(msgspec.Struct, frozen=True):
    """The common ``Result`` envelope of B2C / Status / Balance callbacks.

    ``parameters`` keeps every ``ResultParameter`` in order, duplicates
    included (Transaction Status sends ``DebitPartyName`` twice).
    """

    result_code: str
    result_desc: str
    originator_conversation_id: str
    conversation_id: str
    transaction_id: str
    result_type: str = ""
    parameters: tuple[tuple[str, Any], ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.result_code == "0"

    def get(self, key: str) -> Any:
        """The first value for ``key``, or ``None``."""
        for k, value in self.parameters:
            if k == key:
                return value
        return None

    def get_all(self, key: str) -> list[Any]:
        return [value for k, value in self.parameters if k == key]


class B2CResult(msgspec.Struct, frozen=True):
    """A B2C result; money fields are ``None`` unless it succeeded."""

    result: DarajaResult
    amount_cents: int | None
    receipt: str | None
    receiver_party_public_name: str | None
    completed_at: str | None  # "DD.MM.YYYY HH:MM:SS"
    utility_available_cents: int | None
    working_available_cents: int | None


class TransactionStatusResult(msgspec.Struct, frozen=True):
    """A Transaction Status result; ``status`` is e.g. ``"Completed"``.

    Two OriginatorConversationIDs arrive, and they differ:
    ``result.originator_conversation_id`` (the envelope's) names the *status
    query* itself, while ``originator_conversation_id`` here is the
    ``OriginatorConversationID`` ResultParameter: the id of the *queried*
    transaction, i.e. which payout attempt this answer is about. ``None``
    when Daraja sent none (e.g. a failed lookup without parameters).
    """

    result: DarajaResult
    status: str | None
    amount_cents: int | None
    receipt: str | None
    originator_conversation_id: str | None
    conversation_id: str | None
    debit_party_name: str | None
    credit_party_name: str | None


class AccountBalance(msgspec.Struct, frozen=True):
    """One segment of the ``AccountBalance`` string."""

    name: str
    currency: str
    available_cents: int
    uncleared_cents: int
    reserved_cents: int


class AccountBalanceResult(msgspec.Struct, frozen=True):
    result: DarajaResult
    accounts: dict[str, AccountBalance]
    completed_time: str | None


# ---- parsing -----------------------------------------------------------------

_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}
#: What msgspec raises for bytes it cannot read as JSON of the wanted shape
#: (ValidationError is a DecodeError). A body nested deeper than the
#: recursion limit raises RecursionError instead: malformed all the same, and
#: a callback route must be able to acknowledge it.
_UNREADABLE = (msgspec.DecodeError, RecursionError)


def _decode(raw: bytes | str, kind: type[Any], what: str) -> Any:
    """Decode with JSON numbers that have a fraction becoming ``Decimal``."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind, float_hook=Decimal)
    try:
        return decoder.decode(raw)
    except _UNREADABLE as exc:
        raise DarajaProtocolError(f"malformed {what}: {exc}") from None


def code_str(value: Any) -> str:
    """A result code as a string whether Daraja sent ``0`` or ``"0"``."""
    if isinstance(value, bool):
        raise DarajaProtocolError(f"result code is a boolean: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    raise DarajaProtocolError(f"result code {value!r} is neither a number nor a string")


def kes_cents(value: Any, what: str = "amount") -> int:
    """A KES amount (``1``, ``1.00``, ``"300"``, ``"228037.00"``) as exact cents."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise DarajaProtocolError(f"{what} {value!r} is not a number")
    try:
        return Money.parse(value, Currency.KES).amount_cents
    except MoneyError as exc:
        raise DarajaProtocolError(f"{what}: {exc}") from None


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value)
    return str(value)


def parse_error(raw: bytes) -> ErrorEnvelope | None:
    """The ``{"requestId","errorCode","errorMessage"}`` envelope, if that is what it is."""
    try:
        env = msgspec.json.decode(raw, type=ErrorEnvelope)
    except _UNREADABLE:
        return None
    return env if env.errorCode else None


def parse_token(raw: bytes) -> tuple[str, int]:
    """``(access_token, expires_in_s)`` from an OAuth answer."""
    token: TokenResponse = _decode(raw, TokenResponse, "OAuth response")
    try:
        expires_in = int(token.expires_in)
    except ValueError:
        raise DarajaProtocolError(f"expires_in {token.expires_in!r} is not a number") from None
    if not token.access_token or expires_in <= 0:
        raise DarajaProtocolError("OAuth response without a usable token")
    return token.access_token, expires_in


_RESPONSE_CODE = ("ResponseCode",)
_QUERY_CODES = ("ResponseCode", "ResultCode")


def _decode_with_codes(raw: bytes, kind: type[Any], what: str, codes: tuple[str, ...]) -> Any:
    """Decode ``kind`` after turning its code fields into strings.

    Daraja documents these codes as strings but sends numbers elsewhere
    (protocols.md 1.4, 1.5): ``0`` and ``"0"`` must mean the same, or a
    numeric code would make an otherwise good answer unreadable.
    """
    data: dict[str, Any] = _decode(raw, dict[str, Any], what)
    for name in codes:
        if data.get(name) is not None:
            data[name] = code_str(data[name])
    try:
        return msgspec.convert(data, kind)
    except _UNREADABLE as exc:
        raise DarajaProtocolError(f"malformed {what}: {exc}") from None


def parse_stk_accepted(raw: bytes) -> StkPushAccepted:
    accepted: StkPushAccepted = _decode_with_codes(
        raw, StkPushAccepted, "STK Push response", _RESPONSE_CODE
    )
    return accepted


def parse_stk_query(raw: bytes) -> StkQueryResponse:
    response: StkQueryResponse = _decode_with_codes(
        raw, StkQueryResponse, "STK Query response", _QUERY_CODES
    )
    return response


def parse_async_accepted(raw: bytes) -> AsyncAccepted:
    accepted: AsyncAccepted = _decode_with_codes(
        raw, AsyncAccepted, "acknowledgement", _RESPONSE_CODE
    )
    return accepted


def parse_stk_callback(raw: bytes | str) -> StkCallback:
    """The STK callback POSTed to our CallBackURL."""
    env: _StkEnvelope = _decode(raw, _StkEnvelope, "STK callback")
    cb = env.Body.stkCallback
    code = code_str(cb.ResultCode)
    fields: dict[str, Any] = {}
    if cb.CallbackMetadata is not None:
        items = cb.CallbackMetadata.Item
        listed = items if isinstance(items, list) else [items]
        by_name = {item.Name: item.Value for item in listed}
        if by_name.get("Amount") is not None:
            fields["amount_cents"] = kes_cents(by_name["Amount"], "STK Amount")
        fields["balance_cents"] = _lenient_cents(by_name.get("Balance"))
        fields["receipt"] = _opt_str(by_name.get("MpesaReceiptNumber"))
        fields["transaction_date"] = _opt_str(by_name.get("TransactionDate"))
        fields["phone"] = _opt_str(by_name.get("PhoneNumber"))
    if code == "0" and (fields.get("amount_cents") is None or not fields.get("receipt")):
        raise DarajaProtocolError("successful STK callback without Amount and MpesaReceiptNumber")
    return StkCallback(
        merchant_request_id=cb.MerchantRequestID,
        checkout_request_id=cb.CheckoutRequestID,
        result_code=code,
        result_desc=cb.ResultDesc,
        **fields,
    )


def parse_result(raw: bytes | str) -> DarajaResult:
    """The generic ``{"Result": {...}}`` envelope (also the QueueTimeOutURL notice)."""
    env: _ResultEnvelope = _decode(raw, _ResultEnvelope, "result callback")
    r = env.Result
    params: list[_KeyValue] = []
    if r.ResultParameters is not None:
        p = r.ResultParameters.ResultParameter
        params = p if isinstance(p, list) else [p]
    return DarajaResult(
        result_code=code_str(r.ResultCode),
        result_desc=r.ResultDesc,
        originator_conversation_id=r.OriginatorConversationID,
        conversation_id=r.ConversationID,
        transaction_id=r.TransactionID,
        result_type="" if r.ResultType is None else code_str(r.ResultType),
        parameters=tuple((kv.Key, kv.Value) for kv in params),
    )


def _lenient_cents(value: Any) -> int | None:
    """A plain amount as cents, else ``None``.

    For optional fields PenPay never acts on, such as the STK callback's
    ``Balance``, which may be absent, valueless or text like
    ``{Amount={BasicAmount=46.00, …}}`` (protocols.md 1.3): refusing it would
    throw away a paid callback, receipt and all.
    """
    try:
        return _opt_cents(value, "optional amount")
    except DarajaProtocolError:
        return None


def _opt_cents(value: Any, what: str) -> int | None:
    return None if value is None or value == "" else kes_cents(value, what)


def parse_b2c_result(raw: bytes | str) -> B2CResult:
    r = parse_result(raw)
    return B2CResult(
        result=r,
        amount_cents=_opt_cents(r.get("TransactionAmount"), "TransactionAmount"),
        receipt=_opt_str(r.get("TransactionReceipt")) or (r.transaction_id or None),
        receiver_party_public_name=_opt_str(r.get("ReceiverPartyPublicName")),
        completed_at=_opt_str(r.get("TransactionCompletedDateTime")),
        utility_available_cents=_opt_cents(
            r.get("B2CUtilityAccountAvailableFunds"), "B2CUtilityAccountAvailableFunds"
        ),
        working_available_cents=_opt_cents(
            r.get("B2CWorkingAccountAvailableFunds"), "B2CWorkingAccountAvailableFunds"
        ),
    )


def parse_transaction_status_result(raw: bytes | str) -> TransactionStatusResult:
    r = parse_result(raw)
    parties = r.get_all("DebitPartyName")
    return TransactionStatusResult(
        result=r,
        status=_opt_str(r.get("TransactionStatus")),
        amount_cents=_opt_cents(r.get("Amount"), "Amount"),
        receipt=_opt_str(r.get("ReceiptNo")),
        originator_conversation_id=_opt_str(r.get("OriginatorConversationID")) or None,
        conversation_id=_opt_str(r.get("ConversationID")),
        debit_party_name=_opt_str(parties[0]) if parties else None,
        credit_party_name=_opt_str(parties[1]) if len(parties) > 1 else None,
    )


def parse_balance_string(text: str) -> dict[str, AccountBalance]:
    """``Name|KES|available|uncleared|reserved|…&…`` into cents per account name."""
    accounts: dict[str, AccountBalance] = {}
    for segment in filter(None, text.split("&")):
        parts = segment.split("|")
        if len(parts) < 5:
            raise DarajaProtocolError(f"account balance segment {segment!r} has too few fields")
        name, currency = parts[0].strip(), parts[1].strip()
        accounts[name] = AccountBalance(
            name=name,
            currency=currency,
            available_cents=kes_cents(parts[2].strip(), f"{name} available"),
            uncleared_cents=kes_cents(parts[3].strip(), f"{name} uncleared"),
            reserved_cents=kes_cents(parts[4].strip(), f"{name} reserved"),
        )
    return accounts


def parse_account_balance_result(raw: bytes | str) -> AccountBalanceResult:
    r = parse_result(raw)
    text = r.get("AccountBalance")
    if r.succeeded and not isinstance(text, str):
        raise DarajaProtocolError("successful Account Balance result without AccountBalance")
    return AccountBalanceResult(
        result=r,
        accounts=parse_balance_string(text) if isinstance(text, str) else {},
        completed_time=_opt_str(r.get("BOCompletedTime")),
    )


STK_CALLBACK_ACK: dict[str, Any] = {"ResultCode": 0, "ResultDesc": "Accepted"}
"""What PenPay answers (HTTP 200) to every Daraja callback it received."""
