// faceindex web app: a little plain JavaScript where it helps (no build step).
// Every page works without it; it adds drag-and-drop, live job progress,
// the type-ahead for people, and drawing a box on a photo.
"use strict";

// --- drag-and-drop upload ---------------------------------------------------------------------
function setUpDropzone(zone) {
  const input = zone.querySelector("input[type=file]");
  const chosen = zone.querySelector("[data-chosen]");
  const show = () => { chosen.textContent = Array.from(input.files).map((f) => f.name).join(", "); };
  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    if (!e.dataTransfer.files.length) return;
    input.files = e.dataTransfer.files;
    show();
    zone.closest("form").requestSubmit();
  });
}

// --- live job progress (the REST API's job resource, read with the session) -------------------
function setUpJobPoll(section) {
  const jobId = section.dataset.jobPoll;
  const field = (name) => section.querySelector(`[data-field=${name}]`);
  let failedShown = -1;
  async function tick() {
    let job;
    try {
      const response = await fetch(`/api/v1/jobs/${jobId}`, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(response.status);
      job = await response.json();
    } catch (err) {
      setTimeout(tick, 3000);
      return;
    }
    const done = job.processed_images + job.failed_images;
    field("status").textContent = job.status + (job.listing ? " (still listing the source)" : "");
    field("done").textContent = done;
    field("total").textContent = job.total_images;
    field("failed").textContent = job.failed_images;
    field("faces").textContent = job.faces_found;
    field("rate").textContent = job.images_per_second == null ? "–" : job.images_per_second.toFixed(2);
    field("eta").textContent = job.eta_seconds == null ? "–" : `${Math.round(job.eta_seconds)} s`;
    field("bar").max = Math.max(job.total_images, 1);
    field("bar").value = done;
    if (job.failed_images !== failedShown) {
      failedShown = job.failed_images;
      const response = await fetch(`/api/v1/jobs/${jobId}/images?status=failed&page_size=100`);
      if (response.ok) {
        const list = field("failures");
        const rows = (await response.json()).results;
        list.replaceChildren(...(rows.length ? rows : [null]).map((image) => {
          const li = document.createElement("li");
          if (image) li.textContent = `${image.original_name}: ${image.error.code} — ${image.error.message}`;
          else { li.textContent = "none"; li.className = "hint"; }
          return li;
        }));
      }
    }
    if (job.status === "pending" || job.status === "running") setTimeout(tick, 1000);
    else window.location.reload(); // the finished job's photo list, rendered by the server
  }
  setTimeout(tick, 1000);
}

// --- type-ahead for people (GET /api/v1/identities?search=) -----------------------------------
const peopleByName = new Map();
function setUpPersonInput(input) {
  const hidden = input.form.querySelector("input[name=identity_id]");
  const list = document.getElementById("people-list");
  let timer = null;
  const sync = () => {
    const match = peopleByName.get(input.value.trim().toLowerCase());
    hidden.value = match ? match.id : "";
  };
  input.addEventListener("input", () => {
    sync();
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const response = await fetch(`/api/v1/identities?page_size=10&search=${encodeURIComponent(input.value.trim())}`);
      if (!response.ok) return;
      const people = (await response.json()).results;
      people.forEach((p) => peopleByName.set(p.name.toLowerCase(), p));
      list.replaceChildren(...people.map((p) => { const o = document.createElement("option"); o.value = p.name; return o; }));
      sync();
    }, 150);
  });
  input.addEventListener("change", sync);
}

// --- photo page: click a face, draw a box around a missed one --------------------------------
function setUpPhoto(photo) {
  const width = Number(photo.dataset.width), height = Number(photo.dataset.height);
  const openFace = (faceId) => {
    document.querySelectorAll(".box.active, .face.active").forEach((el) => el.classList.remove("active"));
    const card = document.getElementById(`face-${faceId}`);
    const box = photo.querySelector(`.box[data-face="${faceId}"]`);
    if (box) box.classList.add("active");
    if (card) { card.open = true; card.classList.add("active"); card.scrollIntoView({ block: "nearest" }); }
  };
  photo.querySelectorAll(".box").forEach((box) => box.addEventListener("click", (e) => {
    if (photo.classList.contains("drawing")) { e.preventDefault(); return; }
    e.preventDefault();
    openFace(box.dataset.face);
    history.replaceState(null, "", `#face-${box.dataset.face}`);
  }));
  const target = window.location.hash.match(/^#face-(\d+)$/);
  if (target) openFace(target[1]);

  const toggle = document.getElementById("draw-toggle");
  const form = document.getElementById("tag-form");
  const drawn = photo.querySelector(".drawn");
  if (!toggle || !form || !width || !height) return;
  let start = null;
  toggle.addEventListener("click", () => {
    const on = photo.classList.toggle("drawing");
    toggle.textContent = on ? "Cancel drawing" : "Tag a missed face: draw a box";
    if (!on) { drawn.hidden = true; form.hidden = true; }
  });
  const point = (e) => {
    const r = photo.getBoundingClientRect();
    return { x: Math.min(Math.max(e.clientX - r.left, 0), r.width), y: Math.min(Math.max(e.clientY - r.top, 0), r.height), r };
  };
  photo.addEventListener("pointerdown", (e) => {
    if (!photo.classList.contains("drawing")) return;
    e.preventDefault();
    start = point(e);
    photo.setPointerCapture(e.pointerId);
  });
  photo.addEventListener("pointermove", (e) => {
    if (!start) return;
    const p = point(e);
    Object.assign(drawn.style, { left: `${Math.min(start.x, p.x)}px`, top: `${Math.min(start.y, p.y)}px`,
                                 width: `${Math.abs(p.x - start.x)}px`, height: `${Math.abs(p.y - start.y)}px` });
    drawn.hidden = false;
  });
  photo.addEventListener("pointerup", (e) => {
    if (!start) return;
    const p = point(e), sx = width / p.r.width, sy = height / p.r.height;
    const box = { x: Math.min(start.x, p.x) * sx, y: Math.min(start.y, p.y) * sy, w: Math.abs(p.x - start.x) * sx, h: Math.abs(p.y - start.y) * sy };
    start = null;
    if (box.w < 8 || box.h < 8) { drawn.hidden = true; return; }
    for (const k of ["x", "y", "w", "h"]) form.elements[k].value = box[k].toFixed(1);
    form.querySelector("[data-box]").textContent = `${Math.round(box.x)}, ${Math.round(box.y)} (${Math.round(box.w)}×${Math.round(box.h)} px)`;
    form.hidden = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-dropzone]").forEach(setUpDropzone);
  document.querySelectorAll("[data-job-poll]").forEach(setUpJobPoll);
  document.querySelectorAll("[data-person-input]").forEach(setUpPersonInput);
  const photo = document.getElementById("photo");
  if (photo) setUpPhoto(photo);
});
