// Recording detail: waveform, spectrogram and the per-window probability track, zoomed and scrolled
// together (all three live in wavesurfer's wrapper), with playback. Data comes from a json_script block.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("recording-data").textContent);
  const container = document.getElementById("waveform");
  const playButton = document.getElementById("play");
  const zoomSlider = document.getElementById("zoom");
  const timeLabel = document.getElementById("time");
  const errorBox = document.getElementById("player-error");
  const SVG = "http://www.w3.org/2000/svg";
  const SPECTROGRAM_HEIGHT = 140;
  const SPECTROGRAM_MAX_HZ = 1000;

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  if (!window.WaveSurfer) {
    showError("The waveform player is missing: run scripts/setup.sh (npm) and collectstatic.");
    return;
  }

  const ws = WaveSurfer.create({
    container: container,
    url: data.audioUrl,
    height: 110,
    waveColor: "#5b7fa6",
    progressColor: "#1f3b5a",
    cursorColor: "#c0392b",
    normalize: true,
    minPxPerSec: 20,
    fillParent: true,
    autoScroll: true,
    dragToSeek: true,
    plugins: [
      WaveSurfer.Timeline.create({ height: 18, timeInterval: 1, primaryLabelInterval: 5 }),
      WaveSurfer.Spectrogram.create({
        height: SPECTROGRAM_HEIGHT,
        labels: false, // drawn by frequencyAxis(): the plugin's scrolled away under zoom, its 0 Hz was cut off
        frequencyMin: 0,
        frequencyMax: 1000,
        fftSamples: 512,
        scale: "linear",
        colorMap: "roseus",
      }),
      WaveSurfer.Zoom.create({ scale: 0.25, maxZoom: 1000 }),
    ],
  });
  window.stethPlayer = ws; // for the browser tests and the curious

  // The probability track: one SVG in time units (viewBox x = seconds), stretched with the wrapper.
  // It lives in wavesurfer's shadow DOM, where the page's stylesheet does not reach: styled here.
  function svgEl(name, attrs) {
    const el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, String(attrs[k])); });
    return el;
  }
  function probabilityTrack(duration) {
    const track = document.createElement("div");
    track.setAttribute("data-testid", "probability-track");
    Object.assign(track.style, { position: "relative", height: "70px", borderTop: "1px solid #d9e0e7", background: "#fafbfc" });
    const svg = svgEl("svg", { viewBox: "0 0 " + duration + " 1", preserveAspectRatio: "none" });
    Object.assign(svg.style, { width: "100%", height: "100%", display: "block" });
    data.windows.forEach(function (w) {
      const end = Math.min(duration, w.start + data.windowSeconds);
      const high = w.p >= 0.5;
      const bar = svgEl("rect", {
        x: w.start, width: Math.max(0, end - w.start), y: 1 - w.p, height: w.p,
        fill: high ? "rgba(179, 38, 30, 0.28)" : "rgba(30, 123, 69, 0.22)",
        class: high ? "win high" : "win low",
      });
      const title = document.createElementNS(SVG, "title");
      title.textContent = w.start.toFixed(1) + "–" + end.toFixed(1) + " s: " + data.focus + " " + Math.round(w.p * 100) + "%";
      bar.appendChild(title);
      svg.appendChild(bar);
    });
    svg.appendChild(svgEl("line", {
      x1: 0, x2: duration, y1: 0.5, y2: 0.5, stroke: "#888", "stroke-width": 1,
      "stroke-dasharray": "4 4", "vector-effect": "non-scaling-stroke",
    }));
    svg.appendChild(svgEl("polyline", {
      points: data.windows.map(function (w) {
        return (w.start + Math.min(data.windowSeconds, duration - w.start) / 2) + "," + (1 - w.p);
      }).join(" "),
      fill: "none", stroke: "#1d2733", "stroke-width": 2, "vector-effect": "non-scaling-stroke",
    }));
    track.appendChild(svg);
    const caption = document.createElement("span");
    caption.textContent = "P(" + data.focus + ") per " + data.windowSeconds + " s window";
    Object.assign(caption.style, { position: "absolute", left: "4px", top: "2px", font: "11px sans-serif", color: "#5d6b7a" });
    track.appendChild(caption);
    return track;
  }

  // Frequency labels over the spectrogram's left edge, outside wavesurfer's scrolling wrapper: they stay
  // put when zoomed and scrolled. Each on a light background; 0 Hz sits above the bottom edge.
  let axisTries = 0;
  function frequencyAxis() {
    const old = container.querySelector(".freq-axis");
    if (old) old.remove();
    const wrapper = ws.getWrapper();
    const box = container.getBoundingClientRect();
    const spectrogram = Array.from(wrapper.querySelectorAll("div, canvas")).find(function (el) {
      return Math.round(el.getBoundingClientRect().height) === SPECTROGRAM_HEIGHT;
    });
    if (!spectrogram) {  // the plugin draws after "ready": look again shortly
      if (axisTries++ < 50) setTimeout(frequencyAxis, 100);
      return;
    }
    const top = spectrogram.getBoundingClientRect().top - box.top;
    const axis = document.createElement("div");
    axis.className = "freq-axis";
    axis.setAttribute("data-testid", "frequency-axis");
    Object.assign(axis.style, { position: "absolute", left: "0", top: top + "px", height: SPECTROGRAM_HEIGHT + "px", width: "0", pointerEvents: "none", zIndex: "3" });
    [1000, 750, 500, 250, 0].forEach(function (hz) {
      const label = document.createElement("span");
      label.textContent = hz === 0 ? "0 Hz" : hz + " Hz";
      const y = SPECTROGRAM_HEIGHT * (1 - hz / SPECTROGRAM_MAX_HZ);
      const shift = hz === SPECTROGRAM_MAX_HZ ? "0" : hz === 0 ? "-100%" : "-50%";
      Object.assign(label.style, {
        position: "absolute", left: "2px", top: y + "px", transform: "translateY(" + shift + ")",
        font: "600 12px system-ui, sans-serif", color: "#1d2733", background: "rgba(255, 255, 255, 0.85)",
        padding: "0 4px", borderRadius: "3px", whiteSpace: "nowrap", lineHeight: "16px",
      });
      axis.appendChild(label);
    });
    container.appendChild(axis);
  }

  ws.on("decode", function (duration) {
    ws.getWrapper().appendChild(probabilityTrack(duration));
  });
  ws.on("redrawcomplete", frequencyAxis);
  ws.on("ready", function (duration) {
    // Zoom starts at "whole recording fits"; the buttons and slider go from there to 1000 px/s.
    const fit = Math.max(1, Math.floor(container.clientWidth / Math.max(duration, 0.1)));
    zoomSlider.min = String(fit);
    zoomSlider.max = String(Math.max(fit * 2, 1000));
    zoomSlider.value = String(fit);
    frequencyAxis();
    playButton.disabled = false;
    container.setAttribute("data-ready", "true");
  });
  ws.on("error", function (err) {
    showError("The recording could not be loaded: " + err);
  });
  ws.on("timeupdate", function (t) { timeLabel.textContent = t.toFixed(1) + " s"; });
  ws.on("play", function () { playButton.textContent = "Pause"; container.setAttribute("data-playing", "true"); });
  ws.on("pause", function () { playButton.textContent = "Play"; container.setAttribute("data-playing", "false"); });
  ws.on("zoom", function (px) { zoomSlider.value = String(Math.round(px)); });

  playButton.addEventListener("click", function () { ws.playPause(); });
  zoomSlider.addEventListener("input", function () { ws.zoom(Number(zoomSlider.value)); });
  function step(factor) {
    const next = Math.max(Number(zoomSlider.min), Math.min(Number(zoomSlider.max), Number(zoomSlider.value) * factor));
    zoomSlider.value = String(next);
    ws.zoom(next);
  }
  document.getElementById("zoom-in").addEventListener("click", function () { step(2); });
  document.getElementById("zoom-out").addEventListener("click", function () { step(0.5); });
})();
