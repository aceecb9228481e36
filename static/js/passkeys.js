// Passkeys: "Add a passkey" on the account page and "Sign in with a passkey" on the sign-in page,
// through navigator.credentials and the JSON API (binary fields travel as base64url).
"use strict";
(function () {
  const prefix = document.body.dataset.prefix || "";
  const supported = typeof window.PublicKeyCredential === "function" && !!navigator.credentials;

  function toBytes(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    return Uint8Array.from(binary, function (c) { return c.charCodeAt(0); });
  }
  function toText(buffer) {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function withBytes(list) {
    return (list || []).map(function (c) { return Object.assign({}, c, { id: toBytes(c.id) }); });
  }
  // PublicKeyCredential as JSON, as the server reads it (what toJSON() gives where it exists).
  function asJSON(credential) {
    const r = credential.response;
    const response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      if (r.userHandle) response.userHandle = toText(r.userHandle);
    }
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: response,
    };
  }
  function post(path, body) {
    return fetch(prefix + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response.json().then(function (json) {
        return { status: response.status, json: json };
      }, function () {
        return { status: response.status, json: {} };
      });
    });
  }
  function say(element, text) {
    element.textContent = text;
  }
  function failure(error) {
    // The person closed the prompt or it timed out: nothing went wrong on our side.
    if (error && error.name === "NotAllowedError") return "Cancelled: no passkey was used.";
    if (error && error.name === "InvalidStateError") return "This device already has a passkey for your account.";
    return "Your browser could not use a passkey here.";
  }

  // The account page: add one.
  const add = document.getElementById("passkey-add");
  if (add && supported) {
    const status = document.getElementById("passkey-status");
    const unsupported = document.getElementById("passkey-unsupported");
    if (unsupported) unsupported.hidden = true;
    add.hidden = false;
    add.addEventListener("submit", function (event) {
      event.preventDefault();
      const button = add.querySelector("button");
      button.disabled = true;
      say(status, "Follow your browser's prompt to create the passkey…");
      post("/api/passkeys/register/options").then(function (answer) {
        if (answer.status === 403) { // a password check first, then back here
          location.assign(prefix + "/reauth?next=" + encodeURIComponent(prefix + "/account"));
          return null;
        }
        if (answer.status !== 200) throw new Error(answer.json.error || "Passkeys are not available");
        const options = answer.json;
        options.challenge = toBytes(options.challenge);
        options.user.id = toBytes(options.user.id);
        options.excludeCredentials = withBytes(options.excludeCredentials);
        return navigator.credentials.create({ publicKey: options }).then(function (credential) {
          const name = add.querySelector("input[name=name]").value;
          return post("/api/passkeys/register", { credential: asJSON(credential), name: name });
        }, function (error) {
          throw new Error(failure(error));
        });
      }).then(function (answer) {
        if (!answer) return;
        if (answer.status !== 201) throw new Error(answer.json.error || "The passkey was not added");
        say(status, "Passkey added.");
        location.reload();
      }).catch(function (error) {
        say(status, error.message);
        button.disabled = false;
      });
    });
  }

  // The sign-in page: sign in with one, without the password.
  // Sign in with a passkey: alone on the sign-in page, or as the second step after a password.
  function passkeySignIn(id, path, answerWith) {
    const box = document.getElementById(id);
    if (!box || !supported) return;
    const status = document.getElementById(id + "-status");
    const button = document.getElementById(id + "-button");
    box.hidden = false;
    button.addEventListener("click", function () {
      button.disabled = true;
      say(status, "Follow your browser's prompt to use your passkey…");
      post("/api/login/passkey/options").then(function (answer) {
        if (answer.status !== 200) throw new Error(answer.json.error || "Passkeys are not available");
        const options = answer.json;
        options.challenge = toBytes(options.challenge);
        options.allowCredentials = withBytes(options.allowCredentials);
        return navigator.credentials.get({ publicKey: options }).then(function (credential) {
          return post(path, answerWith(asJSON(credential)));
        }, function (error) {
          throw new Error(failure(error));
        });
      }).then(function (answer) {
        if (answer.status !== 200) throw new Error(answer.json.error || "Not signed in");
        const next = document.querySelector("input[name=next]");
        location.assign(next && next.value ? next.value : prefix + "/dashboard");
      }).catch(function (error) {
        say(status, error.message);
        button.disabled = false;
      });
    });
  }
  passkeySignIn("passkey-signin", "/api/login/passkey", function (credential) {
    const remember = document.querySelector("input[name=rememberMe]");
    return { credential: credential, rememberMe: !!(remember && remember.checked) };
  });
  passkeySignIn("passkey-second", "/api/login/mfa", function (credential) {
    return { passkey: credential };
  });
})();
