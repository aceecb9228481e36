// The admin page: its users and activity lists follow the audit trail live.
"use strict";
(function () {
  let pending = null;
  // The page as the server renders it now (same search, filters and page), swapped in part by
  // part: one rendering of the lists, on the server, for the first load and every update.
  function refresh() {
    pending = null;
    fetch(location.href, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok || response.redirected) return null;
      return response.text();
    }).then(function (html) {
      if (!html) return;
      const fresh = new DOMParser().parseFromString(html, "text/html");
      for (const id of ["users-count", "users-list", "activity"]) {
        const now = document.getElementById(id);
        const next = fresh.getElementById(id);
        // a list being used (focus inside, or an agent opened) is left for the next update
        if (!now || !next || now.contains(document.activeElement) || now.querySelector("details[open]")) continue;
        now.replaceWith(next);
        if (window.authLocalTimes) window.authLocalTimes(next);
      }
    }, function () {});
  }
  document.addEventListener("auth:activity", function () {
    if (pending === null) pending = setTimeout(refresh, 300); // a burst is one fetch
  });
})();
