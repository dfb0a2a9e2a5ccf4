// The agent's browser phone: Twilio's Voice SDK registered as the agent's identity with a
// token Kokan mints (renewed before it ends). Calls the router rings at client:<identity>
// ring here; the agent answers, declines or hangs up with the buttons.
"use strict";

(() => {
  const words = document.currentScript.dataset;
  const state = document.getElementById("phone-state");
  const accept = document.getElementById("phone-accept");
  const reject = document.getElementById("phone-reject");
  const hangup = document.getElementById("phone-hangup");
  let current = null;

  const show = (name, text) => {
    state.dataset.state = name;
    state.textContent = text;
  };
  const buttons = (ringing, talking) => {
    accept.hidden = reject.hidden = !ringing;
    hangup.hidden = !talking;
  };

  async function token() {
    const body = await window.kokan.getJson("/api/acd/me/voice-token");
    state.dataset.identity = body.identity;
    return body.token;
  }

  function follow(call) {
    const caller = call.parameters.From || "?";
    current = call;
    show("ringing", words.ringing.replace("{caller}", caller));
    buttons(true, false);
    call.on("accept", () => {
      show("talking", words.talking.replace("{caller}", caller));
      buttons(false, true);
    });
    for (const ending of ["disconnect", "cancel", "reject"]) {
      call.on(ending, () => {
        current = null;
        buttons(false, false);
        show("ready", words.ready.replace("{identity}", state.dataset.identity));
      });
    }
  }

  accept.addEventListener("click", () => current && current.accept());
  reject.addEventListener("click", () => current && current.reject());
  hangup.addEventListener("click", () => current && current.disconnect());

  async function start() {
    if (!window.Twilio || !window.Twilio.Device) throw new Error("Voice SDK not loaded");
    const device = new window.Twilio.Device(await token(), { logLevel: "error", closeProtection: true });
    device.on("registered", () => show("ready", words.ready.replace("{identity}", state.dataset.identity)));
    device.on("error", (error) => show("offline", words.offline.replace("{reason}", error.message || error)));
    device.on("unregistered", () => show("offline", words.offline.replace("{reason}", "unregistered")));
    device.on("incoming", follow);
    device.on("tokenWillExpire", async () => device.updateToken(await token()));
    show("connecting", state.textContent);
    await device.register();
  }

  start().catch((error) => show("offline", words.offline.replace("{reason}", error.message || error)));
})();
