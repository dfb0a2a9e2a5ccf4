"""The only module that touches pjsua2: one endpoint, its callbacks, and its media.

pjsua2-python 2.15.1 facts this is built on (measured, see issue 7): `threadCnt = 0` with
one thread polling `libHandleEvents`; the null audio device; the bound and published
address set on both the SIP and the media transports (or pjsua publishes a guessed
interface); PCMU/PCMA first; every Call released before `libDestroy`, and calls hung up
with events pumped until they are gone, or the process aborts at exit.

Callbacks arrive on pjsua's threads (SIP on ours, RTP events and player ends on the media
thread), so they only put an event on a queue; the loop thread takes events off it and
calls the driver, and every pjsua2 object is made and destroyed on that thread. An
exception from the driver is logged with the call's id and the caller hears the fallback.
"""

from __future__ import annotations

import gc
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pjsua2 as pj

from ivr.sip_driver import Driver
from kokan import logs
from kokan.config import SipSettings
from kokan.startup import StartupError

POLL_MS = 10
"""How long one libHandleEvents call may block: keys and timeouts are handled within this."""
SHUTDOWN_PUMP_S = 3.0
"""Hang-ups need a BYE and its 200: on loopback milliseconds, a slow peer a second or two."""
STATUS_OK = 200
PJ_LOG_LEVEL = 1
"""pjsua's own log: errors only on the console; Kokan logs the calls itself."""
USER_AGENT = "Kokan"
CODEC_TOP_PRIORITY = 254
"""pjsua's highest codec priority short of 255 (which it reserves); 0 disables a codec."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Event:
    kind: str
    leg: str
    data: tuple[Any, ...] = ()


class _Player(pj.AudioMediaPlayer):  # type: ignore[misc]  # pjsua2 ships no type hints
    def __init__(self, events: queue.SimpleQueue[_Event], leg: str, token: int) -> None:
        super().__init__()
        self.events, self.leg, self.token = events, leg, token

    def onEof2(self) -> None:
        self.events.put(_Event("played", self.leg, (self.token,)))


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(
        self, account: pj.Account, call_id: int, events: queue.SimpleQueue[_Event], leg: str
    ) -> None:
        super().__init__(account, call_id)
        self.events, self.leg = events, leg

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.events.put(_Event("confirmed", self.leg))
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.events.put(_Event("disconnected", self.leg, (int(info.lastStatusCode),)))

    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.events.put(_Event("media", self.leg))
                return

    def onDtmfDigit(self, prm: Any) -> None:
        self.events.put(_Event("digit", self.leg, (str(prm.digit),)))

    def onCallTransferStatus(self, prm: Any) -> None:
        if prm.finalNotify:
            ok = 200 <= int(prm.statusCode) < 300
            self.events.put(_Event("transferred" if ok else "transfer-failed", self.leg))


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, adapter: SipEndpoint) -> None:
        super().__init__()
        self.adapter = adapter

    def onIncomingCall(self, prm: Any) -> None:
        self.adapter.incoming(self, int(prm.callId))


class SipEndpoint:
    """A pjsua2 endpoint and the driver's `Media` port over it."""

    def __init__(self, settings: SipSettings) -> None:
        self.settings = settings
        self.public = settings.public_address or settings.host
        self.events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self.driver: Driver | None = None
        self._calls: dict[str, _Call] = {}
        self._players: dict[str, _Player] = {}
        self._recorders: dict[str, pj.AudioMediaRecorder] = {}
        self._tokens = itertools.count(1)
        self._live_token: dict[str, int] = {}
        self._legs = itertools.count(1)
        self._endpoint: pj.Endpoint | None = None
        self._account: _Account | None = None

    # -- life -------------------------------------------------------------------------

    def start(self) -> None:
        """Raises StartupError (one line for the operator) when the address cannot be used
        or no configured codec exists; the library is destroyed again first."""
        endpoint = pj.Endpoint()
        endpoint.libCreate()
        self._endpoint = endpoint
        try:
            self._start(endpoint)
        except BaseException:
            self._account = None
            gc.collect()
            endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
            self._endpoint = None
            raise

    def _listen_tls(self, endpoint: pj.Endpoint, port: int) -> None:
        """SIP over TLS beside UDP and TCP, with the configured certificate; pjsua reads
        the files now, so a missing or broken one stops the worker with one clear line."""
        s = self.settings
        assert s.tls_certificate is not None
        assert s.tls_private_key is not None
        for path in (s.tls_certificate, s.tls_private_key, s.tls_ca_list):
            if path is not None and not path.is_file():
                raise StartupError(f"sip TLS: {path} is not a readable file")
        transport = pj.TransportConfig()
        transport.port = port
        transport.boundAddress = s.host
        transport.publicAddress = self.public
        transport.tlsConfig.certFile = str(s.tls_certificate)
        transport.tlsConfig.privKeyFile = str(s.tls_private_key)
        # pjsua's OpenSSL setup wants a CA list even to serve; a self-signed one is its own
        transport.tlsConfig.CaListFile = str(s.tls_ca_list or s.tls_certificate)
        try:
            endpoint.transportCreate(pj.PJSIP_TRANSPORT_TLS, transport)
        except pj.Error as exc:
            raise StartupError(
                f"sip.tls_port: cannot listen on {s.host}:{port} over TLS ({exc.reason})"
            ) from None

    def _start(self, endpoint: pj.Endpoint) -> None:
        s = self.settings
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = False
        config.uaConfig.maxCalls = s.max_calls
        config.uaConfig.userAgent = USER_AGENT
        config.medConfig.clockRate = 8000
        config.medConfig.sndClockRate = 8000
        config.medConfig.channelCount = 1
        config.logConfig.level = PJ_LOG_LEVEL
        config.logConfig.consoleLevel = PJ_LOG_LEVEL
        endpoint.libInit(config)
        endpoint.audDevManager().setNullDev()
        for kind, name in ((pj.PJSIP_TRANSPORT_UDP, "UDP"), (pj.PJSIP_TRANSPORT_TCP, "TCP")):
            transport = pj.TransportConfig()
            transport.port = s.port
            transport.boundAddress = s.host
            transport.publicAddress = self.public
            try:
                endpoint.transportCreate(kind, transport)
            except pj.Error as exc:
                raise StartupError(
                    f"sip.host/sip.port: cannot listen on {s.host}:{s.port} over {name} "
                    f"({exc.reason})"
                ) from None
        if s.tls_port is not None:
            self._listen_tls(endpoint, s.tls_port)
        endpoint.libStart()
        self._prefer_codecs(endpoint)
        account_config = pj.AccountConfig()
        account_config.idUri = f"sip:kokan@{self.public}:{s.port}"
        media = account_config.mediaConfig.transportConfig
        media.port = s.rtp_port
        media.portRange = s.rtp_ports_per_worker
        media.boundAddress = s.host
        media.publicAddress = self.public
        # no re-INVITE to narrow an answer with several codecs down to one: it restarts the
        # agent leg's stream, and a phone that sent several copes with any of them
        account_config.mediaConfig.lockCodecEnabled = False
        nat = account_config.natConfig
        nat.contactRewriteUse = 0
        nat.viaRewriteUse = 0
        nat.sdpNatRewriteUse = 0
        nat.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
        nat.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
        account = _Account(self)
        try:
            account.create(account_config, True)
        except pj.Error as exc:
            raise StartupError(
                f"sip.rtp_port: cannot use RTP ports {s.rtp_port}-"
                f"{s.rtp_port + media.portRange - 1} on {s.host} ({exc.reason})"
            ) from None
        self._account = account
        log.info(
            "SIP endpoint on %s:%s (UDP, TCP%s), publishing %s, RTP from %s",
            s.host,
            s.port,
            "" if s.tls_port is None else f"; TLS on {s.host}:{s.tls_port}",
            self.public,
            s.rtp_port,
        )

    def _prefer_codecs(self, endpoint: pj.Endpoint) -> None:
        """The configured codecs in their order; every other codec off (priority 0)."""
        wanted = [name.lower() for name in self.settings.codecs]
        available = [str(codec.codecId) for codec in endpoint.codecEnum2()]
        chosen = 0
        for name in available:
            # pjsua names codecs "PCMU/8000/1": the configured "PCMU/8000" names it
            rank = next((i for i, w in enumerate(wanted) if name.lower().startswith(w)), None)
            endpoint.codecSetPriority(name, 0 if rank is None else CODEC_TOP_PRIORITY - rank)
            chosen += rank is not None
        if not chosen:
            raise StartupError(
                f"sip.codecs: none of {', '.join(self.settings.codecs)} is available "
                f"(this pjsua has {', '.join(available)})"
            )

    def run(self, stop: threading.Event) -> None:
        """Poll pjsua and hand events to the driver until `stop`; then shut down cleanly."""
        if self._endpoint is None or self.driver is None:
            raise RuntimeError("start() and a driver come before run()")
        try:
            while not stop.is_set():
                self._endpoint.libHandleEvents(POLL_MS)
                self._dispatch()
                self._guard(None, lambda: self._driver.tick(time.monotonic()))
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Hang up, pump events until every call is gone, release every pjsua2 object, then
        destroy the library: the only order in which pjsua2 exits without aborting."""
        endpoint = self._endpoint
        if endpoint is None:
            return
        if self.driver is not None:
            self._guard(None, self.driver.shutdown)
        deadline = time.monotonic() + SHUTDOWN_PUMP_S
        while self._calls and time.monotonic() < deadline:
            endpoint.libHandleEvents(POLL_MS)
            self._dispatch()
        if self._calls:
            log.warning("%d calls did not end in time; dropping them", len(self._calls))
            endpoint.hangupAllCalls()
            endpoint.libHandleEvents(POLL_MS)
        self._players.clear()
        self._recorders.clear()
        self._calls.clear()
        if self._account is not None:
            self._account.shutdown()
            self._account = None
        gc.collect()
        # the calls are gone and there is no registration to undo: without network work
        # the library stops at once instead of waiting a second for it
        endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
        self._endpoint = None
        log.info("SIP endpoint stopped")

    @property
    def _driver(self) -> Driver:
        if self.driver is None:
            raise RuntimeError("no driver")
        return self.driver

    # -- events -------------------------------------------------------------------------

    def incoming(self, account: _Account, pj_call_id: int) -> None:
        """On the loop thread (threadCnt = 0): keep the Call alive and tell the driver."""
        leg = str(next(self._legs))
        call = _Call(account, pj_call_id, self.events, leg)
        self._calls[leg] = call
        info = call.getInfo()
        self.events.put(
            _Event(
                "incoming", leg, (str(info.callIdString), str(info.remoteUri), str(info.localUri))
            )
        )

    def _dispatch(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _handle(self, event: _Event) -> None:
        driver = self._driver
        leg = event.leg
        if event.kind == "incoming":
            self._guard(leg, lambda: driver.incoming(leg, *event.data))
        elif event.kind == "media":
            self._guard(leg, lambda: driver.media_ready(leg))
        elif event.kind == "digit":
            self._guard(leg, lambda: driver.digit(leg, event.data[0]))
        elif event.kind == "played":
            if self._live_token.get(leg) == event.data[0]:
                self._live_token.pop(leg, None)
                self._guard(leg, lambda: driver.played(leg))
        elif event.kind == "transferred":
            self._guard(leg, lambda: driver.transferred(leg))
        elif event.kind == "transfer-failed":
            self._guard(leg, lambda: driver.transfer_failed(leg))
        elif event.kind == "confirmed":
            self._guard(leg, lambda: driver.confirmed(leg))
        elif event.kind == "disconnected":
            try:
                self._guard(leg, lambda: driver.disconnected(leg, event.data[0]))
            finally:
                self._release(leg)

    def _guard(self, leg: str | None, work: Callable[[], None]) -> None:
        """The boundary: an error is logged with the call's id and answered by the fallback."""
        try:
            work()
        except Exception:
            call_id = self.driver.call_id_of(leg) if self.driver and leg else None
            token = logs.call_id_var.set(call_id or f"leg-{leg}")
            try:
                log.exception("SIP event handling failed; the caller hears the fallback")
                if leg is not None and self.driver is not None and leg in self._calls:
                    try:
                        self.driver.fail(leg)
                    except Exception:
                        log.exception("the fallback failed; hanging up")
                        self._hang_up_quietly(leg)
            finally:
                logs.call_id_var.reset(token)

    def _release(self, leg: str) -> None:
        self._players.pop(leg, None)
        self._recorders.pop(leg, None)
        self._live_token.pop(leg, None)
        self._calls.pop(leg, None)

    # -- the driver's Media port ------------------------------------------------------

    def answer(self, leg: str) -> None:
        op = pj.CallOpParam()
        op.statusCode = STATUS_OK
        self._calls[leg].answer(op)

    def reject(self, leg: str, status: int) -> None:
        op = pj.CallOpParam()
        op.statusCode = status
        self._calls[leg].hangup(op)

    def _audio(self, leg: str) -> pj.AudioMedia:
        return self._calls[leg].getAudioMedia(-1)

    def play(self, leg: str, files: Sequence[Path], *, loop: bool = False) -> None:
        self.stop_audio(leg)
        token = next(self._tokens)
        player = _Player(self.events, leg, token)
        options = 0 if loop else pj.PJMEDIA_FILE_NO_LOOP
        if len(files) == 1:
            player.createPlayer(str(files[0]), options)
        else:
            names = pj.StringVector([str(path) for path in files])
            player.createPlaylist(names, "", options)
        player.startTransmit(self._audio(leg))
        self._players[leg] = player
        if not loop:
            self._live_token[leg] = token

    def stop_audio(self, leg: str) -> None:
        self._live_token.pop(leg, None)
        player = self._players.pop(leg, None)
        if player is not None:
            try:
                player.stopTransmit(self._audio(leg))
            except Exception:
                log.debug("the call's media is already gone")
            del player

    def start_recording(self, leg: str, path: Path) -> None:
        self.stop_audio(leg)
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(str(path))
        self._audio(leg).startTransmit(recorder)
        self._recorders[leg] = recorder

    def stop_recording(self, leg: str) -> None:
        recorder = self._recorders.pop(leg, None)
        if recorder is None:
            return
        try:
            self._audio(leg).stopTransmit(recorder)
        except Exception:
            log.debug("the call's media is already gone")
        del recorder  # destroying the recorder writes the WAV header's final sizes
        gc.collect()

    def dial(self, uri: str) -> str:
        """An outgoing call (an agent's leg) from the configured address; its events come
        like an incoming call's, under the returned leg."""
        if self._account is None:
            raise RuntimeError("the endpoint is not started")
        leg = str(next(self._legs))
        call = _Call(self._account, pj.PJSUA_INVALID_ID, self.events, leg)
        op = pj.CallOpParam(True)
        op.opt.audioCount = 1
        op.opt.videoCount = 0
        call.makeCall(uri, op)  # a pj.Error (bad URI, no free call slot) reaches the driver
        self._calls[leg] = call
        return leg

    def bridge(self, one: str, other: str) -> None:
        """Each side hears the other through the conference bridge (pjsua disconnects the
        ports itself when either call ends)."""
        first, second = self._audio(one), self._audio(other)
        first.startTransmit(second)
        second.startTransmit(first)

    def transmit(self, source: str, sink: str) -> None:
        """One way through the conference bridge: `sink` hears `source` (a supervisor)."""
        self._audio(source).startTransmit(self._audio(sink))

    def stop_transmit(self, source: str, sink: str) -> None:
        try:
            self._audio(source).stopTransmit(self._audio(sink))
        except Exception:
            log.debug("the connection or the call's media is already gone")

    def rx_level(self, leg: str) -> int:
        """The level of what the caller sends, as the conference bridge last measured it
        (20 ms frames, while a recorder listens). Measured on pjsua2 2.15: a call port's
        getTxLevel follows the caller's voice (what the port transmits into the bridge) and
        its getRxLevel stays 0."""
        return int(self._audio(leg).getTxLevel())

    def transfer(self, leg: str, target: str) -> None:
        op = pj.CallOpParam()
        self._calls[leg].xfer(target, op)

    def hang_up(self, leg: str) -> None:
        self.stop_audio(leg)
        self.stop_recording(leg)
        self._hang_up_quietly(leg)

    def _hang_up_quietly(self, leg: str) -> None:
        call = self._calls.get(leg)
        if call is None:
            return
        try:
            call.hangup(pj.CallOpParam())
        except Exception:
            log.debug("hang-up of a call already ending")
