"""The agent's browser phone: a Twilio Voice SDK access token minted by Kokan.

The page never sees Kokan's Twilio secrets: it asks for a short-lived token that lets the
browser register as the agent's `twilio_identity`, the very `client:<identity>` the
router rings. Without an API key in the configuration there is no browser phone, and
agents take calls on their SIP softphone or phone instead.
"""

from __future__ import annotations

from typing import Any

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

from kokan.config import TwilioSettings
from kokan.errors import Conflict

TOKEN_TTL_S = 3600
"""An hour: the page renews it before it ends (tokenWillExpire), and a stolen one dies soon."""


class BrowserPhoneNotConfigured(Conflict):
    error_id = "browser-phone-not-configured"


class NoBrowserIdentity(Conflict):
    error_id = "browser-phone-no-identity"


def configured(twilio: TwilioSettings) -> bool:
    return bool(twilio.account_sid and twilio.api_key_sid and twilio.api_key_secret)


def mint_token(twilio: TwilioSettings, agent_id: str, contact: dict[str, str]) -> dict[str, Any]:
    account, key, secret = twilio.account_sid, twilio.api_key_sid, twilio.api_key_secret
    if not (account and key and secret):
        raise BrowserPhoneNotConfigured(
            "no browser phone: set twilio.account_sid, api_key_sid and api_key_secret"
        )
    identity = contact.get("twilio_identity")
    if not identity:
        raise NoBrowserIdentity(f"agent {agent_id!r} has no twilio_identity to register as")
    token = AccessToken(
        account,
        key,
        secret.get_secret_value(),
        identity=identity,
        ttl=TOKEN_TTL_S,
    )
    token.add_grant(VoiceGrant(incoming_allow=True, outgoing_application_sid=twilio.twiml_app_sid))
    return {"token": token.to_jwt(), "identity": identity, "ttl_seconds": TOKEN_TTL_S}
