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
        height: 140,
        labels: true,
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
  function probabilityTrack(duration) {
    const track = document.createElement("div");
    track.className = "prob-track";
    track.setAttribute("data-testid", "probability-track");
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + duration + " 1");
    svg.setAttribute("preserveAspectRatio", "none");
    const half = document.createElementNS(SVG, "line");
    half.setAttribute("x1", "0"); half.setAttribute("x2", String(duration));
    half.setAttribute("y1", "0.5"); half.setAttribute("y2", "0.5");
    half.setAttribute("class", "half");
    svg.appendChild(half);
    data.windows.forEach(function (w) {
      const bar = document.createElementNS(SVG, "rect");
      const end = Math.min(duration, w.start + data.windowSeconds);
      bar.setAttribute("x", String(w.start));
      bar.setAttribute("width", String(Math.max(0, end - w.start)));
      bar.setAttribute("y", String(1 - w.p));
      bar.setAttribute("height", String(w.p));
      bar.setAttribute("class", w.p >= 0.5 ? "win high" : "win low");
      const title = document.createElementNS(SVG, "title");
      title.textContent = w.start.toFixed(1) + "–" + end.toFixed(1) + " s: " + data.focus + " " + Math.round(w.p * 100) + "%";
      bar.appendChild(title);
      svg.appendChild(bar);
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", data.windows.map(function (w) {
      return (w.start + Math.min(data.windowSeconds, duration - w.start) / 2) + "," + (1 - w.p);
    }).join(" "));
    line.setAttribute("class", "trend");
    svg.appendChild(line);
    track.appendChild(svg);
    return track;
  }

  ws.on("decode", function (duration) {
    ws.getWrapper().appendChild(probabilityTrack(duration));
  });
  ws.on("ready", function () {
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
