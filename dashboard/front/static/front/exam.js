// Exam page: one small waveform per site with its S1/S2 marks and its own Play button; playing one
// site pauses the others. Data (audio URL, duration, cycles) comes from the json_script block.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const sites = JSON.parse(document.getElementById("exam-data").textContent);
  if (!window.WaveSurfer) {
    document.querySelectorAll(".site-wave").forEach(function (el) {
      el.textContent = "The waveform player is missing: run scripts/setup.sh (npm) and collectstatic.";
    });
    return;
  }
  const players = [];

  function marks(duration, cycles) {
    // One SVG in time units (viewBox x = seconds) stretched over the waveform: it zooms with it.
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + duration + " 1");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("data-testid", "cycle-marks");
    Object.assign(svg.style, { position: "absolute", inset: "0", width: "100%", height: "100%", pointerEvents: "none" });
    [["s1", "#1f5f99"], ["s2", "#8e44ad"]].forEach(function (kind) {
      (cycles[kind[0]] || []).forEach(function (t) {
        if (t > duration) return;
        const line = document.createElementNS(SVG, "line");
        line.setAttribute("x1", t); line.setAttribute("x2", t);
        line.setAttribute("y1", kind[0] === "s1" ? 0 : 0.15); line.setAttribute("y2", 1);
        line.setAttribute("stroke", kind[1]);
        line.setAttribute("stroke-width", kind[0] === "s1" ? 2 : 1.5);
        line.setAttribute("vector-effect", "non-scaling-stroke");
        line.setAttribute("class", "mark-" + kind[0]);
        svg.appendChild(line);
      });
    });
    return svg;
  }

  sites.forEach(function (site, index) {
    const button = document.querySelector('.site-play[data-index="' + index + '"]');
    const container = document.getElementById("wave-" + site.id);
    if (!site.audioUrl || !container) { players.push(null); return; }
    const ws = WaveSurfer.create({
      container: container, url: site.audioUrl, height: 90, normalize: true,
      waveColor: "#5b7fa6", progressColor: "#1f3b5a", cursorColor: "#c0392b", fillParent: true, dragToSeek: true,
    });
    players.push(ws);
    ws.on("decode", function (duration) {
      const wrapper = ws.getWrapper();
      wrapper.style.position = "relative";
      wrapper.appendChild(marks(duration, site.cycles || {}));
    });
    ws.on("ready", function () { button.disabled = false; container.setAttribute("data-ready", "true"); });
    ws.on("play", function () {
      players.forEach(function (other) { if (other && other !== ws) other.pause(); });
      button.textContent = "Pause"; container.setAttribute("data-playing", "true");
    });
    ws.on("pause", function () { button.textContent = "Play"; container.setAttribute("data-playing", "false"); });
    ws.on("error", function (err) { container.textContent = "The recording could not be loaded: " + err; });
    button.addEventListener("click", function () { ws.playPause(); });
  });
  window.stethExamPlayers = players; // for the browser tests
})();
