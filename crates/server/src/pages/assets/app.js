// giamsat pages: live updates from the case's event stream, and Phụ lục 03 rates as figures are
// typed. Served from the daemon itself; the pages work without it.
(function () {
  "use strict";

  // On-time over total in percent with one decimal and a decimal comma, as the server writes it.
  function rateText(onTime, total) {
    if (!(total > 0)) return "";
    var tenths = Math.floor((onTime * 2000 + total) / (total * 2));
    return Math.floor(tenths / 10) + "," + (tenths % 10) + "%";
  }

  function wireRates() {
    var inputs = document.querySelectorAll("input[data-rate]");
    Array.prototype.forEach.call(inputs, function (input) {
      input.addEventListener("input", function () {
        var rateId = input.getAttribute("data-rate");
        var base = rateId.slice(0, -"-rate".length);
        var total = document.getElementById(base + "-total");
        var onTime = document.getElementById(base + "-on_time");
        var out = document.getElementById(rateId);
        if (!total || !onTime || !out) return;
        var t = Number(total.value), o = Number(onTime.value);
        var whole = total.value !== "" && onTime.value !== "" &&
          Number.isInteger(t) && Number.isInteger(o) && t >= 0 && o >= 0;
        out.textContent = whole && o <= t ? rateText(o, t) : "";
      });
    });
  }

  function showBanner(text) {
    var banner = document.getElementById("cap-nhat");
    if (!banner) return;
    var content = document.getElementById("cap-nhat-noi-dung");
    if (content) content.textContent = text || "Có cập nhật mới";
    banner.hidden = false;
  }

  // Fetches the page again and swaps the sections marked data-live; anything else (a form being
  // filled in) stays as it is.
  function refreshSections() {
    return fetch(window.location.href, {
      credentials: "same-origin",
      headers: { "Accept": "text/html" }
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      var sections = document.querySelectorAll("section[data-live][id]");
      Array.prototype.forEach.call(sections, function (section) {
        var replacement = fresh.getElementById(section.id);
        if (replacement && replacement.innerHTML !== section.innerHTML) {
          section.innerHTML = replacement.innerHTML;
        }
      });
      var now = new Date();
      var hh = String(now.getHours()).padStart(2, "0");
      var mm = String(now.getMinutes()).padStart(2, "0");
      showBanner("Đã cập nhật lúc " + hh + ":" + mm);
    });
  }

  function wireLive() {
    var url = document.body.getAttribute("data-live");
    if (!url || !window.EventSource || !window.fetch) return;
    var match = /^\/ho-so\/([^/]+)\/cap-nhat$/.exec(url);
    if (!match) return;
    var stream = "case/" + decodeURIComponent(match[1]);
    var canRefresh = document.querySelector("section[data-live][id]") !== null;
    var busy = false, again = false;
    var reload = document.getElementById("tai-lai");
    if (reload) {
      reload.addEventListener("click", function (event) {
        event.preventDefault();
        window.location.reload();
      });
    }
    function changed() {
      if (!canRefresh) { showBanner(); return; }
      if (busy) { again = true; return; }
      busy = true;
      refreshSections().catch(function () { showBanner(); }).then(function () {
        busy = false;
        if (again) { again = false; changed(); }
      });
    }
    var source = new EventSource(url);
    source.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (event && event.stream_id === stream) changed();
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireRates();
    wireLive();
  });
}());
