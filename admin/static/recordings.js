// Recordings: search through the recordings API, play with seeking (the audio is served
// with HTTP ranges), and read the transcript beside the player; a word seeks to itself.
"use strict";

(() => {
  const form = document.getElementById("search");
  const body = document.querySelector("#recordings tbody");
  const player = document.getElementById("player");
  const audio = document.getElementById("audio");
  const transcript = document.getElementById("transcript");
  const problem = document.getElementById("recordings-error");

  const { getJson } = window.kokan;
  const length = (ms) => (ms === null ? "—" : `${Math.round(ms / 1000)} s`);

  async function open(id) {
    const detail = await getJson(`/api/recordings/${id}`);
    player.hidden = false;
    player.dataset.recording = id;
    document.getElementById("player-id").textContent = `#${id}`;
    audio.src = detail.audio_url;
    const words = (detail.transcript && detail.transcript.words) || [];
    transcript.replaceChildren(
      ...words.map((word) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "word";
        button.textContent = word.word;
        button.dataset.startMs = word.start_ms;
        button.addEventListener("click", () => {
          audio.currentTime = word.start_ms / 1000;
          audio.play().catch(() => {});
        });
        return button;
      }),
    );
    if (!words.length && detail.transcript) transcript.textContent = detail.transcript.text;
  }

  async function search(event) {
    if (event) event.preventDefault();
    const params = new URLSearchParams(new FormData(form));
    for (const [key, value] of [...params]) if (!value) params.delete(key);
    try {
      const page = await getJson(`/api/recordings?${params}`);
      problem.hidden = true;
      body.replaceChildren(
        ...page.recordings.map((recording) => {
          const row = document.createElement("tr");
          row.dataset.recording = recording.id;
          const link = document.createElement("button");
          link.type = "button";
          link.textContent = `#${recording.id}`;
          link.addEventListener("click", () => open(recording.id).catch((e) => alert(e)));
          const first = document.createElement("th");
          first.scope = "row";
          first.appendChild(link);
          row.appendChild(first);
          for (const text of [
            new Date(recording.created_at).toLocaleString(),
            recording.kind,
            recording.queue || "—",
            recording.agent_id || "—",
            length(recording.duration_ms),
          ]) {
            const td = document.createElement("td");
            td.textContent = text;
            row.appendChild(td);
          }
          return row;
        }),
      );
    } catch (error) {
      problem.hidden = false;
      problem.textContent = String(error.message || error);
    }
  }

  form.addEventListener("submit", search);
  search();
})();
