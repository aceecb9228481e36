// The board, live: new and removed notes from every tab; the sign-in page when the session ends.
"use strict";
(function () {
  const SESSION_ENDED = 4001;
  const prefix = document.body.dataset.prefix || "";
  const list = document.getElementById("notes");
  const status = document.getElementById("live-status");

  function paint(item) {
    // The colour comes from data-colour: the Content-Security-Policy forbids inline styles.
    item.style.color = item.dataset.colour;
  }

  function show(note) {
    if (document.getElementById("note-" + note.id)) return;
    const item = document.createElement("li");
    item.id = "note-" + note.id;
    item.dataset.colour = note.colour;
    const author = document.createElement("strong");
    author.className = "author";
    author.textContent = note.author;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = note.text;
    item.append(author, text);
    paint(item);
    if (list.dataset.sort === "newest") list.prepend(item);
    else list.append(item);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/notes");
    socket.addEventListener("open", function () { status.textContent = "Live"; });
    socket.addEventListener("message", function (message) {
      const event = JSON.parse(message.data);
      if (event.type === "note") show(event.note);
      else if (event.type === "removed") document.getElementById("note-" + event.id)?.remove();
    });
    socket.addEventListener("close", function (close) {
      if (close.code === SESSION_ENDED) {
        location.assign(prefix + "/login?next=%2F&ended=" + encodeURIComponent(close.reason || "ended"));
      } else {
        status.textContent = "Reconnecting…";
        setTimeout(connect, 2000);
      }
    });
  }

  list.querySelectorAll("li").forEach(paint);
  connect();
})();
