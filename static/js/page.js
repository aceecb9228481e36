// Every page: confirmations in a dialog, "show password", local times, no stale page after Back.
"use strict";
(function () {
  // A page restored from the back-forward cache may be one from before a sign-out: ask again.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) location.reload();
  });

  // Forms with data-confirm-* ask in a dialog first; without this script the server asks on a
  // page of its own, so the action is never done unasked either way.
  const dialog = document.getElementById("confirm-dialog");
  function article(role) {
    return (/^[aeio]/.test(role) ? "an " : "a ") + role;
  }
  function ask(form, submitter) {
    const role = form.querySelector("select[name=role]");
    const title = form.dataset.confirmTitle.replace("{role}", role ? article(role.value) : "");
    document.getElementById("confirm-dialog-title").textContent = title;
    document.getElementById("confirm-dialog-message").textContent = form.dataset.confirmMessage;
    document.getElementById("confirm-dialog-ok").textContent = form.dataset.confirmButton;
    dialog.returnValue = "";
    dialog.addEventListener("close", function () {
      if (dialog.returnValue !== "confirm") {
        if (submitter) submitter.focus();
        return;
      }
      const confirm = document.createElement("input");
      confirm.type = "hidden";
      confirm.name = "confirm";
      confirm.value = "1";
      form.append(confirm);
      form.dataset.confirmed = "1";
      form.requestSubmit(submitter || undefined);
    }, { once: true });
    dialog.showModal();
  }
  if (dialog && typeof dialog.showModal === "function") {
    document.addEventListener("submit", function (event) {
      const form = event.target;
      if (!form.dataset || !form.dataset.confirmTitle || form.dataset.confirmed) return;
      event.preventDefault();
      ask(form, event.submitter);
    });
  }

  // "Show password": the checkboxes are hidden until this script can make them work.
  for (const box of document.querySelectorAll("input[data-reveal]")) {
    const field = document.getElementById(box.dataset.reveal);
    if (!field) continue;
    box.closest("label").hidden = false;
    box.addEventListener("change", function () {
      field.type = box.checked ? "text" : "password";
    });
  }
  // Never send a password field as text: browsers may offer to store text fields.
  document.addEventListener("submit", function (event) {
    for (const box of event.target.querySelectorAll("input[data-reveal]")) {
      const field = document.getElementById(box.dataset.reveal);
      if (field) field.type = "password";
    }
  });

  // Times: the server writes UTC; here they become the reader's local time, and "5 minutes ago".
  const relative = typeof Intl.RelativeTimeFormat === "function"
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" })
    : null;
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  function ago(date) {
    const seconds = (date.getTime() - Date.now()) / 1000;
    if (Math.abs(seconds) < 45) return "just now";
    for (const [unit, size] of units) {
      if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
    }
    return "just now";
  }
  function localTimes(root) {
    for (const time of root.querySelectorAll("time[data-local]")) {
      const date = new Date(time.getAttribute("datetime"));
      if (isNaN(date)) continue;
      time.title = time.textContent;
      time.textContent = date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    }
    if (!relative) return;
    for (const span of root.querySelectorAll("[data-relative]")) {
      const date = new Date(span.dataset.relative);
      if (!isNaN(date)) span.textContent = "(" + ago(date) + ")";
    }
  }
  window.authLocalTimes = localTimes;
  localTimes(document);
})();
