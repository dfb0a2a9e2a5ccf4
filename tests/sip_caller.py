"""A scriptable SIP caller for the tests: one pjsua2 process, one call at a time, driven by
JSON lines on stdin and reporting by JSON lines on stdout.

sipp plays a scenario fixed in advance; a flow test's caller must press its keys when the
call waits for them, which only the test knows (it watches the driver's state in Redis).
So this peer does what it is told, when it is told:

    {"op": "call", "uri": "sip:…", "caller": "+8190…", "heard": "/tmp/x.wav"}
        -> {"event": "calling", "sip_call_id": "…"}, then "confirmed", and at the end
           {"event": "disconnected", "status": 200}; what it received is written to `heard`
    {"op": "keys", "keys": "123#"}   RFC 2833 telephone-events -> {"event": "keys-sent"}
    {"op": "speak", "file": "x.wav"} the file as the caller's voice -> {"event": "spoken"}
    {"op": "hangup"}                 a BYE (the "disconnected" event follows)
    {"op": "quit"}                   hang up, pump events until the call is gone, exit

The caller's number is the From user (one pjsua account per number, no registration).
pjsua2 is set up as Kokan's own endpoint is (ivr/sip_adapter.py): null sound device, one
thread polling `libHandleEvents`, every object made and destroyed on it, calls gone
before `libDestroy`.

    python -m tests.sip_caller --port 5080 --rtp-port 40000
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import queue
import sys
import threading
import time
from typing import Any

import pjsua2 as pj

from bench.bare_pjsua import MAX_CALLS, start_endpoint

POLL_MS = 10
"""One libHandleEvents wait: commands from stdin are taken between two."""
SHUTDOWN_PUMP_S = 3.0
"""A BYE and its 200 on 127.0.0.1 take milliseconds; past this the call is dropped."""
CODECS = ("PCMA/8000", "PCMU/8000")


EVENTS = sys.stdout
"""Where events go: the process's stdout as it started (pjsua's own C-level printing is
sent to stderr in `main`, so it never mixes into the events)."""


def emit(event: str, **data: Any) -> None:
    EVENTS.write(json.dumps({"event": event, **data}) + "\n")
    EVENTS.flush()


class Player(pj.AudioMediaPlayer):  # type: ignore[misc]  # pjsua2 ships no type hints
    def __init__(self, done: queue.SimpleQueue[str]) -> None:
        super().__init__()
        self.done = done

    def onEof2(self) -> None:
        self.done.put("spoken")


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, account: pj.Account, caller: Caller) -> None:
        super().__init__(account)
        self.caller = caller

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            emit("confirmed")
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.caller.ended.put(int(info.lastStatusCode))

    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()  # kept: its media vector dies with it
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.caller.media_up()
                return


class Caller:
    def __init__(self, port: int, rtp_port: int) -> None:
        self.endpoint = pj.Endpoint()
        self.port = port
        self.rtp_port = rtp_port
        self.accounts: dict[str, pj.Account] = {}
        self.call: Call | None = None
        self.heard_path: str | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.player: Player | None = None
        self.ended: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.spoken: queue.SimpleQueue[str] = queue.SimpleQueue()

    def start(self) -> None:
        start_endpoint(self.endpoint, "127.0.0.1", self.port, CODECS)

    def account(self, number: str) -> pj.Account:
        if number not in self.accounts:
            config = pj.AccountConfig()
            config.idUri = f"sip:{number}@127.0.0.1:{self.port}"
            media = config.mediaConfig.transportConfig
            media.port = self.rtp_port
            media.portRange = 2 * MAX_CALLS
            media.boundAddress = "127.0.0.1"
            media.publicAddress = "127.0.0.1"
            config.natConfig.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
            config.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
            account = pj.Account()
            account.create(config, False)
            self.accounts[number] = account
        return self.accounts[number]

    def media_up(self) -> None:
        if self.call is None or self.recorder is not None or self.heard_path is None:
            return
        audio = self.call.getAudioMedia(-1)
        # the null sound device as the caller's microphone: silence keeps the stream
        # sending, and RFC 2833 events go out with its frames
        self.endpoint.audDevManager().getCaptureDevMedia().startTransmit(audio)
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(self.heard_path)
        audio.startTransmit(recorder)
        self.recorder = recorder
        emit("media")

    def handle(self, command: dict[str, Any]) -> bool:
        op = command.get("op")
        if op == "call":
            if self.call is not None:
                emit("error", message="a call is already up")
                return True
            self.heard_path = command.get("heard")
            call = Call(self.account(str(command["caller"])), self)
            op_param = pj.CallOpParam(True)
            op_param.opt.audioCount = 1
            op_param.opt.videoCount = 0
            call.makeCall(str(command["uri"]), op_param)
            self.call = call
            emit("calling", sip_call_id=str(call.getInfo().callIdString))
        elif op == "keys" and self.call is not None:
            self.call.dialDtmf(str(command["keys"]))
            emit("keys-sent")
        elif op == "speak" and self.call is not None:
            player = Player(self.spoken)
            player.createPlayer(str(command["file"]), pj.PJMEDIA_FILE_NO_LOOP)
            player.startTransmit(self.call.getAudioMedia(-1))
            self.player = player
        elif op == "hangup" and self.call is not None:
            self.call.hangup(pj.CallOpParam())
        elif op == "quit":
            return False
        else:
            emit("error", message=f"cannot {op} now")
        return True

    def pump(self) -> None:
        self.endpoint.libHandleEvents(POLL_MS)
        while not self.spoken.empty():
            self.spoken.get()
            self.player = None
            emit("spoken")
        while not self.ended.empty():
            status = self.ended.get()
            self.finish_call()
            emit("disconnected", status=status)

    def finish_call(self) -> None:
        self.player = None
        self.recorder = None  # its destruction writes the WAV header's sizes
        self.call = None
        self.heard_path = None
        gc.collect()

    def stop(self) -> None:
        if self.call is not None:
            with contextlib.suppress(pj.Error):
                self.call.hangup(pj.CallOpParam())
            deadline = time.monotonic() + SHUTDOWN_PUMP_S
            while self.call is not None and time.monotonic() < deadline:
                self.pump()
        if self.call is not None:
            self.endpoint.hangupAllCalls()
            self.endpoint.libHandleEvents(POLL_MS)
            self.finish_call()
        for account in self.accounts.values():
            account.shutdown()
        self.accounts.clear()
        gc.collect()
        self.endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)


def read_commands(commands: queue.SimpleQueue[dict[str, Any] | None]) -> None:
    for line in sys.stdin:
        if line.strip():
            commands.put(json.loads(line))
    commands.put(None)  # stdin closed: the test is gone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, required=True)
    options = parser.parse_args()
    global EVENTS
    EVENTS = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    caller = Caller(options.port, options.rtp_port)
    caller.start()
    commands: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    threading.Thread(target=read_commands, args=(commands,), daemon=True).start()
    emit("ready")
    try:
        running = True
        while running:
            caller.pump()
            while running and not commands.empty():
                command = commands.get()
                try:
                    running = command is not None and caller.handle(command)
                except pj.Error as exc:
                    emit("error", message=str(exc.info()))
    finally:
        caller.stop()


if __name__ == "__main__":
    main()
