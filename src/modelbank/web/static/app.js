// modelbank dashboard: dialogs, confirmations, select-all and Plotly charts. No inline
// scripts anywhere (the Content-Security-Policy allows scripts from this origin only).
(function () {
  "use strict";

  function fill(dialog, opener) {
    var form = dialog.querySelector("form");
    if (form && opener.dataset.action) form.setAttribute("action", opener.dataset.action);
    if (!opener.dataset.fill) return;
    var values = JSON.parse(opener.dataset.fill);
    Object.keys(values).forEach(function (name) {
      var value = values[name];
      dialog.querySelectorAll('[data-fill-text="' + name + '"]').forEach(function (el) {
        el.textContent = value;
      });
      var field = form && form.elements.namedItem(name);
      if (!field || !("type" in field)) return;
      if (field.type === "checkbox") field.checked = Boolean(value);
      else field.value = value === null ? "" : String(value);
    });
  }

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.dataset.openDialog);
      if (dialog && typeof dialog.showModal === "function") {
        fill(dialog, opener);
        dialog.showModal();
        var first = dialog.querySelector("input:not([type=hidden]), select, button");
        if (first) first.focus();
      }
      return;
    }
    var closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      var open = closer.closest("dialog");
      if (open) open.close();
    }
  });

  // Confirm destructive or paying actions: data-confirm on the form or the button pressed.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var message = (button && button.dataset.confirm) || form.dataset.confirm;
    if (message && !window.confirm(message)) {
      event.preventDefault();
      return;
    }
    // A second click while the page is loading sends nothing (the server's form_key is
    // the real protection). Disabled after this tick, so the button's own value is sent.
    if ((form.method || "").toLowerCase() !== "post") return;
    window.setTimeout(function () {
      form.querySelectorAll("button[type=submit], button:not([type])").forEach(function (b) {
        b.disabled = true;
      });
    }, 0);
  });

  // Back to a page kept in the browser's cache: its buttons work again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form button[disabled]").forEach(function (b) {
      b.disabled = false;
    });
  });

  // A header checkbox ticks every box with its name (the pricing table's selection).
  document.addEventListener("change", function (event) {
    var all = event.target.closest("[data-select-all]");
    if (!all) return;
    document.querySelectorAll('input[type=checkbox][name="' + all.dataset.selectAll + '"]')
      .forEach(function (box) { box.checked = all.checked; });
  });

  function drawCharts() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-plotly]").forEach(function (el) {
      var spec = JSON.parse(el.dataset.plotly);
      window.Plotly.newPlot(el, spec.data, spec.layout, {
        responsive: true, displaylogo: false, displayModeBar: false
      }).then(function () { el.classList.add("drawn"); });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawCharts);
  else drawCharts();
})();
