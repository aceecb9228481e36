// The live connection of the signed-in pages: status, events, admin statistics, and sign-out.
"use strict";
(function () {
  const SESSION_ENDED = 4001;
  const TOO_MANY_SOCKETS = 4008; // newer dashboards of this session pushed this one out
  const prefix = document.body.dataset.prefix || ""; // where the app mounted our routes
  const status = document.getElementById("live-status");
  const events = document.getElementById("events");
  const reasons = {
    logout: "you signed out in another tab",
    revoked: "this session was revoked",
    password: "your password was changed",
    disabled: "your account was disabled",
    role: "your role was changed",
    expired: "your session expired",
    limit: "you signed in on too many devices",
    ended: "your session ended",
  };
  let delay = 500;

  function setStatus(state, text) {
    if (!status) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  function addEvent(text) {
    if (!events) return;
    const placeholder = events.querySelector(".muted");
    if (placeholder) placeholder.remove();
    const item = document.createElement("li");
    item.textContent = new Date().toLocaleTimeString() + " — " + text;
    events.prepend(item);
  }

  function showStats(stats) {
    for (const [name, value] of Object.entries(stats)) {
      const cell = document.querySelector('[data-stat="' + name + '"]');
      if (cell) cell.textContent = value === null ? "unavailable" : String(value);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + prefix + "/ws/dashboard");
    socket.addEventListener("open", function () {
      delay = 500;
      setStatus("open", "Live: connected");
    });
    socket.addEventListener("message", function (message) {
      const event = JSON.parse(message.data);
      if (event.type === "signin") addEvent("New sign-in from " + event.ip + " (" + (event.device || event.userAgent) + ")");
      else if (event.type === "sessions_ended") addEvent(event.ids.length + " of your sessions ended: " + (reasons[event.reason] || reasons.ended));
      else if (event.type === "stats") showStats(event);
      else if (event.type === "activity") document.dispatchEvent(new CustomEvent("auth:activity"));
    });
    socket.addEventListener("close", function (close) {
      if (close.code === SESSION_ENDED && close.reason !== "regenerated") {
        const why = reasons[close.reason] || reasons.ended;
        setStatus("ended", "Signed out: " + why + ". Taking you to the sign-in page…");
        setTimeout(function () {
          location.assign(prefix + "/login?ended=" + encodeURIComponent(close.reason || "ended"));
        }, 1200);
        return;
      }
      if (close.code === TOO_MANY_SOCKETS) {
        setStatus("paused", "Live updates paused: this session has newer dashboards open. Reload to resume.");
        return; // reopening would push out another tab's socket, and so on
      }
      setStatus("connecting", "Reconnecting…");
      setTimeout(reconnect, delay);
      delay = Math.min(delay * 2, 15000);
    });
  }

  // A refused handshake looks like a dropped connection: ask the API whether we are signed in.
  function reconnect() {
    fetch(prefix + "/api/dashboard", { credentials: "same-origin" }).then(function (response) {
      if (response.status === 401) location.assign(prefix + "/login?ended=ended");
      else connect();
    }, connect);
  }

  connect();
})();
