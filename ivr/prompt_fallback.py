"""A prompt file gone at run time: the caller hears the flow's words for it, not silence.

The flow check refuses a `play` whose file does not exist, but a file can still go after
the flow was published (deleted, a bad deploy). Both drivers pass a turn's actions through
`resolve` before playing them: each `Play` of a local file that is no longer there becomes
what the flow says the file says (`Play.said`: a `play` node's `text`, a prompt part's
`say` beside its `play`), or, with no words given, the flow's short apology (the spoken
parts of its fallback prompt, else Kokan's own). The call walks on; a warning names the
file and the call. URLs are left alone: whether they answer is only known when fetched.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ivr.engine import Action, Audio, Listen, Play, Record, Say
from kokan import logs

log = logging.getLogger(__name__)

FILE_CHECK_TTL_S = 2.0
"""How long one look at a prompt file is trusted: the voice webhook answers hundreds of turns
a second naming the same few files, and a file deleted is still noticed within seconds."""

Apology = Callable[[], Sequence[Say]]
"""The flow's short apology, asked for only when a missing file has no words of its own."""


def file_missing(flows_dir: Path, source: str) -> bool:
    """A local prompt file that is not (or no longer) a file under the flows folder; a URL
    is never missing here."""
    if source.startswith(("http://", "https://")):
        return False
    root = flows_dir.resolve()
    path = (root / source).resolve()
    return not path.is_relative_to(root) or not path.is_file()


class PromptFiles:
    """`file_missing` for the voice webhook, each answer kept FILE_CHECK_TTL_S: one stat per
    file and worker every few seconds instead of one per prompt per turn."""

    def __init__(self, flows_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.flows_dir = flows_dir
        self.clock = clock
        self._seen: dict[str, tuple[float, bool]] = {}

    def missing(self, source: str) -> bool:
        now = self.clock()
        seen = self._seen.get(source)
        if seen is not None and now - seen[0] < FILE_CHECK_TTL_S:
            return seen[1]
        gone = file_missing(self.flows_dir, source)
        self._seen[source] = (now, gone)
        return gone


def resolve(
    actions: Sequence[Action],
    *,
    missing: Callable[[str], bool],
    apology: Apology,
    call_id: str,
) -> tuple[Action, ...]:
    """The actions with every missing file's `Play` replaced by its words (or the apology),
    in place, also inside a `Listen`'s or a `Record`'s prompts; each is logged under
    `call_id`. Unchanged when nothing is missing (the same objects, so the Twilio
    renderer's cache still hits)."""
    said_apology: list[Sequence[Say]] = []

    def instead(play: Play) -> tuple[Audio, ...]:
        token = logs.call_id_var.set(call_id)
        try:
            if play.said is not None:
                log.warning("prompt file %s is missing; saying its text instead", play.source)
                return (play.said,)
            log.warning(
                "prompt file %s is missing and has no text; apologising instead", play.source
            )
            if not said_apology:
                said_apology.append(tuple(apology()))
            return tuple(said_apology[0])
        finally:
            logs.call_id_var.reset(token)

    def audio(items: Sequence[Audio]) -> tuple[Audio, ...]:
        out: list[Audio] = []
        for item in items:
            if isinstance(item, Play) and missing(item.source):
                out.extend(instead(item))
            else:
                out.append(item)
        return tuple(out)

    resolved: list[Action] = []
    changed = False
    for action in actions:
        if isinstance(action, Play) and missing(action.source):
            resolved.extend(instead(action))
            changed = True
        elif isinstance(action, Listen | Record) and any(
            isinstance(p, Play) and missing(p.source) for p in action.prompts
        ):
            resolved.append(dataclasses.replace(action, prompts=audio(action.prompts)))
            changed = True
        else:
            resolved.append(action)
    return tuple(resolved) if changed else tuple(actions)
