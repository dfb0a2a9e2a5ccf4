"""The baseline of bench/sip.py: a bare pjsua2 answer-and-play program, the library's
ceiling per process.

It answers every call, plays the prompt, and on the first key (RFC 2833) plays the music
in a loop until the caller hangs up: the audio work of Kokan's bench flow without the
engine, Redis, the ACD or the database. The endpoint is set up as Kokan's (ivr/sip_adapter)
is, so the difference between the two is Kokan's own cost: null sound device, one thread
polling libHandleEvents (threadCnt = 0), 8 kHz bridge, G.711 only, the configured address
bound and published, at most 4 calls (the wheel's PJSUA_MAX_CALLS).

    python -m bench.bare_pjsua --port 5070 --rtp-port 40000 --prompt p.wav --music m.wav

SIGTERM or SIGINT hangs up, pumps events until the calls are gone, then destroys the
library (the only order in which pjsua2 exits without aborting).
"""

from __future__ import annotations

import argparse
import gc
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pjsua2 as pj

MAX_CALLS = 4
"""pjsua2-python 2.15.1's wheel is compiled with PJSUA_MAX_CALLS = 4."""
POLL_MS = 10
"""libHandleEvents' wait: the audio clock runs on its own thread, SIP needs no faster."""
SHUTDOWN_PUMP_S = 3.0
"""Hung-up calls disconnect within milliseconds on 127.0.0.1; past this they are dropped."""
CODECS = ("PCMU/8000", "PCMA/8000")
"""The codecs Kokan offers by default, in its order; every other codec is off."""
CODEC_TOP_PRIORITY = 255
STATUS_OK = 200


class BareCall(pj.Call):  # type: ignore[misc]  # pjsua2 ships no types
    def __init__(self, endpoint: BareEndpoint, account: pj.Account, call_id: int) -> None:
        super().__init__(account, call_id)
        self.endpoint = endpoint
        self.player: pj.AudioMediaPlayer | None = None
        self.keyed = False

    def play(self, path: Path, *, loop: bool) -> None:
        media = self.getAudioMedia(-1)
        if self.player is not None:
            self.player.stopTransmit(media)
        player = pj.AudioMediaPlayer()
        player.createPlayer(str(path), 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(media)
        self.player = player

    def onCallMediaState(self, prm: Any) -> None:
        if self.getInfo().media and not self.keyed and self.player is None:
            self.play(self.endpoint.prompt, loop=False)

    def onDtmfDigit(self, prm: Any) -> None:
        if not self.keyed:
            self.keyed = True
            self.play(self.endpoint.music, loop=True)

    def onCallState(self, prm: Any) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.endpoint.ended.append(self)


class BareAccount(pj.Account):  # type: ignore[misc]  # pjsua2 ships no types
    def __init__(self, endpoint: BareEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint

    def onIncomingCall(self, prm: Any) -> None:
        call = BareCall(self.endpoint, self, int(prm.callId))
        self.endpoint.calls[int(prm.callId)] = call
        op = pj.CallOpParam()
        op.statusCode = STATUS_OK
        call.answer(op)


def start_endpoint(
    endpoint: pj.Endpoint,
    host: str,
    port: int,
    codecs: Sequence[str],
    transports: Sequence[int] = (pj.PJSIP_TRANSPORT_UDP,),
) -> None:
    """Create, initialise and start `endpoint` as Kokan's is set up (ivr/sip_adapter): null
    sound device, threadCnt = 0, 8 kHz mono bridge, SIP bound to and published as
    host:port, only `codecs` enabled, in their order. Shared with the tests' SIP caller."""
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = False
    config.uaConfig.maxCalls = MAX_CALLS
    config.medConfig.clockRate = 8000
    config.medConfig.sndClockRate = 8000
    config.medConfig.channelCount = 1
    config.logConfig.level = 1
    config.logConfig.consoleLevel = 1
    endpoint.libInit(config)
    endpoint.audDevManager().setNullDev()
    for kind in transports:
        transport = pj.TransportConfig()
        transport.port = port
        transport.boundAddress = host
        transport.publicAddress = host
        endpoint.transportCreate(kind, transport)
    endpoint.libStart()
    wanted = [name.lower() for name in codecs]
    for codec in endpoint.codecEnum2():
        name = str(codec.codecId)
        rank = next((i for i, w in enumerate(wanted) if name.lower().startswith(w)), None)
        endpoint.codecSetPriority(name, 0 if rank is None else CODEC_TOP_PRIORITY - rank)


class BareEndpoint:
    def __init__(self, host: str, port: int, rtp_port: int, prompt: Path, music: Path) -> None:
        self.host, self.port, self.rtp_port = host, port, rtp_port
        self.prompt, self.music = prompt, music
        self.calls: dict[int, BareCall] = {}
        self.ended: list[BareCall] = []
        self.endpoint = pj.Endpoint()
        self.account: BareAccount | None = None

    def start(self) -> None:
        start_endpoint(
            self.endpoint,
            self.host,
            self.port,
            CODECS,
            transports=(pj.PJSIP_TRANSPORT_UDP, pj.PJSIP_TRANSPORT_TCP),
        )
        account_config = pj.AccountConfig()
        account_config.idUri = f"sip:bare@{self.host}:{self.port}"
        media = account_config.mediaConfig.transportConfig
        media.port = self.rtp_port
        media.portRange = 2 * MAX_CALLS
        media.boundAddress = self.host
        media.publicAddress = self.host
        account_config.mediaConfig.lockCodecEnabled = False
        nat = account_config.natConfig
        nat.contactRewriteUse = 0
        nat.viaRewriteUse = 0
        nat.sdpNatRewriteUse = 0
        nat.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
        nat.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
        self.account = BareAccount(self)
        self.account.create(account_config, True)
        print(f"bare pjsua on {self.host}:{self.port}, RTP from {self.rtp_port}", flush=True)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.endpoint.libHandleEvents(POLL_MS)
                self._release_ended()
        finally:
            self.shutdown()

    def _release_ended(self) -> None:
        """Outside the callback that reported it: a Call must not die inside its own."""
        while self.ended:
            call = self.ended.pop()
            call.player = None
            self.calls = {k: c for k, c in self.calls.items() if c is not call}

    def shutdown(self) -> None:
        self.endpoint.hangupAllCalls()
        deadline = time.monotonic() + SHUTDOWN_PUMP_S
        while self.calls and time.monotonic() < deadline:
            self.endpoint.libHandleEvents(POLL_MS)
            self._release_ended()
        self.calls.clear()
        self.ended.clear()
        if self.account is not None:
            self.account.shutdown()
            self.account = None
        gc.collect()
        self.endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        print("bare pjsua stopped", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, required=True)
    parser.add_argument("--prompt", type=Path, required=True, help="8 kHz mono WAV")
    parser.add_argument("--music", type=Path, required=True, help="8 kHz mono WAV, looped")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    bare = BareEndpoint(args.host, args.port, args.rtp_port, args.prompt, args.music)
    bare.start()
    bare.run(stop)


if __name__ == "__main__":
    main()
