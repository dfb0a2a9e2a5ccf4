"""A flow's `transfer` node over SIP: where the call goes, and how.

A `sip:` target is used as it is; an E.164 number (+81…) can only leave through a trunk or
gateway (`sip.trunk`), so it becomes `sip:+81…@<trunk>`. With `sip.transfer: refer` (the
default) the driver sends the caller a REFER, and dials the target and bridges it itself
when the REFER fails (many trunks answer it 405, 501 or 603); with `bridge` it always does
(Kokan stays on the call, and it takes two of the worker's call slots). The rules live in
`ivr.sip_driver.Driver`; this module holds what they are configured with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokan.config import SipSettings

TRANSFER_RING_S = 30.0
"""How long a transfer's target rings before the caller is told it cannot be reached: the
usual ring-out of a phone or trunk, short enough that a caller still listens."""
NO_TRUNK = "sip-transfer-no-trunk"
"""A number to transfer to, but no `sip.trunk` to reach numbers through."""
NOT_REACHED = "sip-transfer-not-reached"
"""The target was busy, declined, did not answer in time, or could not be dialled."""
SCHEMES = ("sip:", "sips:")


@dataclass(frozen=True)
class TransferRules:
    """`trunk`: where numbers go (None: nowhere); `mode`: REFER first, or bridge always."""

    trunk: str | None = None
    mode: Literal["refer", "bridge"] = "refer"
    ring_s: float = TRANSFER_RING_S

    @classmethod
    def of(cls, settings: SipSettings) -> TransferRules:
        return cls(trunk=settings.trunk, mode=settings.transfer)


def target_uri(target: str, trunk: str | None) -> str | None:
    """The SIP URI a flow's transfer target is reached at; None for a number when no trunk
    is configured. `target` is what the flow language allows: a sip: URI or E.164."""
    if target.startswith(SCHEMES):
        return target
    if trunk is None:
        return None
    scheme = "sips" if trunk.startswith("sips:") else "sip"
    address = trunk.split(":", 1)[1] if trunk.startswith(SCHEMES) else trunk
    return f"{scheme}:{target}@{address}"
