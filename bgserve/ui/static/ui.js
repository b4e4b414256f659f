// bgserve dashboard: refresh the live part every 2 s, post the action forms as JSON.
// No inline script anywhere (the CSP forbids it); everything the server sends is escaped.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var meta = document.querySelector('meta[name="bgserve-csrf"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var live = document.getElementById("live");
  var status = document.getElementById("status");
  var shown = live ? live.innerHTML : "";

  var sayTimer = 0;

  function say(text, bad) {
    clearTimeout(sayTimer);
    if (text) sayTimer = setTimeout(function () { status.textContent = ""; }, 10000);
    status.textContent = text;
    status.className = bad ? "bad" : "";
    status.setAttribute("role", bad ? "alert" : "status");
  }

  function refresh() {
    if (!live || !live.dataset.src) return Promise.resolve();
    return fetch(live.dataset.src, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { location.assign("/ui/login"); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== shown) { live.innerHTML = html; shown = html; }
      })
      .catch(function () { /* the next poll tries again */ });
  }

  function poll() {
    setTimeout(function () {
      (document.hidden ? Promise.resolve() : refresh()).then(poll);
    }, POLL_MS);
  }

  function post(url, body, headers) {
    headers["content-type"] = "application/json";
    headers["x-bgserve-ui"] = "1";
    return fetch(url, {
      method: "POST", credentials: "same-origin", headers: headers, body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        return { ok: r.ok, status: r.status, data: data };
      });
    });
  }

  function values(form) {
    var body = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name) return;
      if (el.type === "checkbox") { if (el.checked) body[el.name] = true; return; }
      if (el.value === "") return;
      body[el.name] = el.dataset.type === "int" ? parseInt(el.value, 10) : el.value;
    });
    return body;
  }

  document.querySelectorAll("form[data-action]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = values(form);
      if (body.force && !window.confirm("Force it? This skips the gate and is recorded.")) return;
      var buttons = form.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      say("working…", false);
      post(form.dataset.action, body, { "x-bgserve-csrf": csrf }).then(function (res) {
        if (form.dataset.action === "/ui/logout") { location.assign("/ui/login"); return; }
        say(res.data.message || (res.ok ? "done" : "failed (" + res.status + ")"), !res.ok);
        return refresh();
      }).catch(function () { say("bgserve did not answer", true); })
        .then(function () { buttons.forEach(function (b) { b.disabled = false; }); });
    });
  });

  var login = document.querySelector("form[data-login]");
  if (login) {
    login.addEventListener("submit", function (event) {
      event.preventDefault();
      post(login.dataset.login, { token: login.elements.token.value }, {}).then(function (res) {
        if (res.ok) { location.assign("/ui"); return; }
        say(res.data.message || "sign-in failed", true);
      });
    });
  }

  if (live) poll();
})();
