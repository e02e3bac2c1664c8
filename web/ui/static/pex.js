/* pex UI: the little JavaScript the pages use (no inline script: the CSP forbids it).
   - a job page (section[data-job-poll]) polls its .json twin every second and updates itself until the job ends;
   - a form with data-confirm="text" asks in a <dialog> before it submits (data-extra-confirm="text": a checkbox
     "text" must also be ticked). Without JavaScript every form submits directly; the server checks everything. */
(function () {
  "use strict";

  function setText(root, key, value) {
    root.querySelectorAll('[data-job="' + key + '"]').forEach(function (el) {
      el.textContent = value === null || value === undefined || value === "" ? "-" : String(value);
    });
  }

  // a hint with its `backquoted` commands as <code>, like the server renders it (text nodes only: names stay data)
  function setCode(el, text) {
    el.textContent = "";
    String(text).split("`").forEach(function (part, i) {
      if (!part) { return; }
      if (i % 2) { var code = document.createElement("code"); code.textContent = part; el.appendChild(code); }
      else { el.appendChild(document.createTextNode(part)); }
    });
  }

  function pollJob(section) {
    var url = section.getAttribute("data-job-poll");
    var timer = null;
    function update(job) {
      setText(section, "status_text", job.status_text);
      setText(section, "stage", job.stage);
      setText(section, "progress_text", job.progress_text);
      setText(section, "message", job.message);
      setText(section, "started", job.started);
      setText(section, "ended", job.ended);
      var verdict = section.querySelector('[data-job="status_text"]');
      if (verdict) { verdict.className = "verdict verdict-" + job.status_tone; }
      var bar = section.querySelector("progress");
      if (bar) { bar.value = job.percent; bar.textContent = job.percent + "%"; }
      var errorBox = section.querySelector('[data-job-box="error"]');
      if (errorBox) {
        errorBox.classList.toggle("hidden", !job.error);
        errorBox.querySelector('[data-job="error"]').textContent = job.error || "";
        setCode(errorBox.querySelector('[data-job="hint"]'), job.hint || "");
      }
      var runBox = section.querySelector('[data-job-box="run"]');
      if (runBox && job.run_id) {
        runBox.classList.remove("hidden");
        runBox.querySelector("a").setAttribute("href", "/ui/runs/" + encodeURIComponent(job.run_id));
      }
    }
    function tick() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (data) {
          update(data.job);
          var log = document.querySelector('[data-job="log"]');
          if (log) {
            log.textContent = data.log.length ? data.log.map(function (row) { return row.line + "\n"; }).join("")
                                              : "(nothing logged yet)";
          }
          if (data.job.finished) {
            section.setAttribute("data-finished", "true");
            // the actions change with the status (Cancel -> Run again): reload to show the right ones (the
            // reloaded page says data-finished="true", so it polls no more)
            window.location.reload();
            return;
          }
          timer = window.setTimeout(tick, 1000);
        })
        .catch(function () { timer = window.setTimeout(tick, 3000); });  // a restart of pex ui: keep trying
    }
    if (section.getAttribute("data-finished") !== "true") { timer = window.setTimeout(tick, 1000); }
    return function () { if (timer) { window.clearTimeout(timer); } };
  }

  function confirmDialog(form) {
    var text = form.getAttribute("data-confirm");
    var extra = form.getAttribute("data-extra-confirm");
    var opener = document.activeElement;
    var dialog = document.createElement("dialog");
    dialog.className = "confirm";
    dialog.setAttribute("aria-labelledby", "confirm-text");
    var p = document.createElement("p");
    p.id = "confirm-text";
    p.textContent = text;
    dialog.appendChild(p);
    var box = null;
    if (extra) {
      var label = document.createElement("label");
      box = document.createElement("input");
      box.type = "checkbox";
      var span = document.createElement("span");
      span.textContent = extra;
      label.appendChild(box);
      label.appendChild(span);
      dialog.appendChild(label);
    }
    var buttons = document.createElement("div");
    buttons.className = "buttons";
    // the buttons say what they do: "Cancel" would be ambiguous next to an action that cancels a job
    var submitter = form.querySelector("button[type=submit], button:not([type])");
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "secondary";
    cancel.textContent = "Go back";
    var ok = document.createElement("button");
    ok.type = "button";
    ok.textContent = submitter ? submitter.textContent.trim() : "Confirm";
    buttons.appendChild(cancel);
    buttons.appendChild(ok);
    dialog.appendChild(buttons);
    document.body.appendChild(dialog);
    if (box) {
      ok.disabled = true;
      box.addEventListener("change", function () { ok.disabled = !box.checked; });
    }
    function close() {
      dialog.close();
      dialog.remove();
      if (opener && opener.focus) { opener.focus(); }
    }
    cancel.addEventListener("click", close);
    dialog.addEventListener("cancel", function (event) { event.preventDefault(); close(); });  // Escape
    ok.addEventListener("click", function () {
      if (box && !box.checked) { return; }
      form.setAttribute("data-confirmed", "true");
      dialog.close();
      dialog.remove();
      if (box) {
        var flag = document.createElement("input");
        flag.type = "hidden";
        flag.name = "extra_confirmed";
        flag.value = "yes";
        form.appendChild(flag);
      }
      form.submit();
    });
    // keep Tab inside the dialog (showModal makes the rest inert; this also wraps around its own controls)
    dialog.addEventListener("keydown", function (event) {
      if (event.key !== "Tab") { return; }
      var items = Array.prototype.filter.call(dialog.querySelectorAll("button, input"), function (el) { return !el.disabled; });
      if (!items.length) { return; }
      var first = items[0], last = items[items.length - 1];
      if (event.shiftKey && document.activeElement === first) { event.preventDefault(); last.focus(); }
      else if (!event.shiftKey && document.activeElement === last) { event.preventDefault(); first.focus(); }
    });
    dialog.showModal();
    (box || cancel).focus();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-confirm")) { return; }
    if (form.getAttribute("data-confirmed") === "true") { return; }
    event.preventDefault();
    confirmDialog(form);
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("section[data-job-poll]").forEach(pollJob);
    // the dialog asks for the extra confirmation: the page's own checkbox (for use without JavaScript) goes away
    document.querySelectorAll("form[data-extra-confirm] label.extra-confirm").forEach(function (label) {
      label.remove();
    });
  });
})();
