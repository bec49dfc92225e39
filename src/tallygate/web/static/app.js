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
  var refresh = document.querySelector("[data-autorefresh]");
  if (refresh) {
    setTimeout(function () { window.location.href = refresh.getAttribute("href"); },
      1000 * Number(refresh.getAttribute("data-autorefresh")));
  }
})();
