"""Whether a call is recorded, and what the caller is told first.

The rule, one line: a flow's `recording:` wins over the queue's `record` when the flow
sets it; when neither does, calls are not recorded. `always` records from the moment the
agent answers; `on_demand` waits for an agent (or supervisor) to start it through the
API; `never` records nothing (voicemails are always kept, whatever the policy).

The consent announcement comes from the same place as the policy: a flow with a policy
says its own consent at the queue node; otherwise the queue's `recording_consent` is said
to the caller just before the bridge.
"""

from __future__ import annotations

from typing import Literal

from kokan.config import QueueSettings

Mode = Literal["always", "never", "on_demand"]
ALWAYS = "always"
NEVER = "never"
ON_DEMAND = "on_demand"
MODES = (ALWAYS, NEVER, ON_DEMAND)
FALLBACK_CONSENT_LANGUAGE = "en"
"""A consent in no language the caller chose: English, then whichever the queue has."""


def effective_mode(flow_mode: str | None, queue: QueueSettings | None) -> str:
    if flow_mode in MODES:
        return flow_mode or NEVER
    return queue.record if queue is not None else NEVER


def may_record(mode: str) -> bool:
    return mode in (ALWAYS, ON_DEMAND)


def queue_consent(queue: QueueSettings | None, language: str) -> tuple[str, str] | None:
    """The queue's consent text and its language, in the caller's language if it has one."""
    texts = queue.recording_consent if queue is not None else {}
    if not texts:
        return None
    short = language.split("-")[0]
    for candidate in (language, short, FALLBACK_CONSENT_LANGUAGE):
        if candidate in texts:
            return texts[candidate], candidate
    chosen = next(iter(texts))
    return texts[chosen], chosen
