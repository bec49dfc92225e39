// Progressive enhancement only: every form and link works without this file.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var preset = event.target.closest("[data-fill]");
    if (preset) {
      var target = document.querySelector(preset.getAttribute("data-fill"));
      if (target) { target.value = preset.getAttribute("data-value"); target.focus(); }
      return;
    }
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var field = document.querySelector(button.getAttribute("data-copy"));
    if (!field) return;
    field.select();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  });
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
  // Post-payment "confirming…": ask the order's state until the payment resolves, then show it.
  var poll = document.querySelector("[data-poll]");
  if (poll && window.fetch) {
    var tries = 0;
    var ask = function () {
      tries += 1;
      fetch(poll.getAttribute("data-poll"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (state) {
          if (state && state.phase !== "confirming") { window.location.reload(); return; }
          if (tries < 600) setTimeout(ask, tries < 30 ? 2000 : 10000);
        }, function () { if (tries < 600) setTimeout(ask, 10000); });
    };
    setTimeout(ask, 2000);
  }
  // Research form: when the data or the model changes, ask the server for the estimate (the
  // form's own "Estimate cost" post, CSRF token included) and show its answer in place.
  var researchForm = document.querySelector("form[data-testid=research-form]");
  var estimateBox = document.getElementById("research-estimate");
  if (researchForm && estimateBox && window.fetch && window.FormData && window.DOMParser) {
    var asked = 0;
    var reestimate = function () {
      var mine = ++asked;
      var body = new FormData(researchForm);
      body.set("action", "estimate");
      estimateBox.setAttribute("aria-busy", "true");
      fetch(researchForm.getAttribute("action"), { method: "POST", body: body, credentials: "same-origin" })
        .then(function (r) { return r.text(); })
        .then(function (html) {
          if (mine !== asked) return;  // a later change is on its way
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("research-estimate");
          if (fresh) estimateBox.innerHTML = fresh.innerHTML;
          estimateBox.removeAttribute("aria-busy");
        }, function () { estimateBox.removeAttribute("aria-busy"); });
    };
    ["sample", "files", "model"].forEach(function (id) {
      var field = document.getElementById(id);
      if (field) field.addEventListener("change", reestimate);
    });
  }
  // Research run: follow its progress events until it ends, then show the report.
  var research = document.querySelector("[data-research-run][data-finished=false]");
  if (research && window.fetch) {
    var list = research.querySelector("[data-testid=progress]");
    var spent = research.querySelector("[data-testid=spent]");
    var runStatus = research.querySelector("[data-testid=run-status]");
    // An exact decimal string ("0.0042135") shown as the money filter shows it ("$0.0042135").
    var money = function (text, symbol, currency) {
      var sign = text.charAt(0) === "-" ? "-" : "";
      var parts = text.replace("-", "").split(".");
      var digits = parts[0].replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + (parts[1] || "00");
      return sign + (symbol ? symbol + digits : digits + " " + currency);
    };
    var follow = function () {
      fetch("/api/research/runs/" + research.getAttribute("data-research-run"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (run) {
          if (!run) { setTimeout(follow, 3000); return; }
          list.textContent = "";
          run.events.forEach(function (e) {
            var item = document.createElement("li");
            item.setAttribute("data-kind", e.kind);
            item.textContent = e.message;
            list.appendChild(item);
          });
          runStatus.textContent = run.status;
          spent.textContent = money(run.spent, spent.getAttribute("data-symbol"), run.currency);
          if (run.finished) { window.location.reload(); return; }
          setTimeout(follow, 1000);
        }, function () { setTimeout(follow, 3000); });
    };
    setTimeout(follow, 1000);
  }
  // Playground: stream the answer into the page, then show its receipt (the plain form post
  // still works without this).
  var chat = document.querySelector("form[data-stream]");
  if (chat && window.fetch && window.ReadableStream && window.TextDecoder) {
    chat.addEventListener("submit", function (event) {
      event.preventDefault();
      var live = document.getElementById("live");
      var answer = live.querySelector("[data-testid=stream-answer]");
      var state = document.getElementById("live-state");
      var error = document.getElementById("live-error");
      var receipt = document.getElementById("live-receipt");
      var button = chat.querySelector("button[type=submit]");
      var old = document.querySelector("[data-result]");
      if (old) old.remove();
      live.hidden = false;
      answer.textContent = "";
      receipt.innerHTML = "";
      error.hidden = true;
      state.textContent = "streaming…";
      button.disabled = true;
      var fail = function (text) { error.textContent = text; error.hidden = false; };
      var handle = function (line) {
        if (!line) return;
        var e = JSON.parse(line);
        if (e.delta) answer.textContent += e.delta;
        if (e.error) fail(e.error);
        if (e.receipt_html !== undefined) receipt.innerHTML = e.receipt_html;
        if (e.done) state.textContent = "done";
      };
      fetch(chat.getAttribute("data-stream"), {
        method: "POST", body: new URLSearchParams(new FormData(chat)), credentials: "same-origin"
      }).then(function (response) {
        var type = response.headers.get("content-type") || "";
        if (!response.ok || !response.body || type.indexOf("ndjson") < 0) {
          fail(response.redirected ? "You are signed out: sign in again, then send."
            : response.status === 403 ? "This form has expired: reload the page and try again."
            : "The request could not be sent (HTTP " + response.status + ").");
          return;
        }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        var pump = function () {
          return reader.read().then(function (part) {
            buffer += decoder.decode(part.value || new Uint8Array(), { stream: !part.done });
            var lines = buffer.split("\n");
            buffer = lines.pop();
            lines.forEach(handle);
            if (part.done) { handle(buffer); return; }
            return pump();
          });
        };
        return pump();
      }).catch(function () { fail("The connection broke off before the answer ended."); })
        .then(function () { button.disabled = false; if (state.textContent === "streaming…") state.textContent = ""; });
    });
  }
  var refresh = document.querySelector("[data-autorefresh]");
  if (refresh) {
    setTimeout(function () { window.location.href = refresh.getAttribute("href"); },
      1000 * Number(refresh.getAttribute("data-autorefresh")));
  }
})();
