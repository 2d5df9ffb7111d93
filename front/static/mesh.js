// The mesh page: every service in the namespace and its live instances, as
// the front's discovery reports them. Snapshots arrive over server-sent events.
"use strict";

const COLUMNS = ["Instance", "Address", "Version", "Zone", "Age", "Calls", "Failures", "In flight"];
// Instances seen in the previous snapshot, to highlight new ones.
let knownInstances = new Set();

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
}

function countText(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function renderInstance(service, instance) {
  const row = document.createElement("tr");
  row.className = "instance";
  row.dataset.instance = instance.instance_id;
  const key = `${service.name}/${instance.instance_id}`;
  if (knownInstances.size > 0 && !knownInstances.has(key)) row.classList.add("new");
  cell(row, instance.instance_id, "mono");
  cell(row, instance.address, "mono");
  cell(row, instance.version);
  cell(row, instance.zone);
  cell(row, formatAge(instance.age_seconds), "number");
  cell(row, countText(instance.calls), "number");
  cell(row, countText(instance.failures), "number");
  cell(row, countText(instance.in_flight), "number");
  return row;
}

function renderService(service) {
  const section = document.createElement("section");
  section.className = "card service";
  section.dataset.service = service.name;
  const heading = document.createElement("h2");
  const count = service.instances.length;
  heading.textContent = `${service.name} `;
  const badge = document.createElement("span");
  badge.className = count > 0 ? "badge" : "badge empty";
  badge.textContent = `${count} instance${count === 1 ? "" : "s"}`;
  heading.append(badge);
  section.append(heading);
  if (count === 0) {
    const note = document.createElement("p");
    note.textContent = "No live instance is registered.";
    section.append(note);
    return section;
  }
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const title of COLUMNS) {
    const th = document.createElement("th");
    th.textContent = title;
    head.append(th);
  }
  const body = table.createTBody();
  for (const instance of service.instances) body.append(renderInstance(service, instance));
  section.append(table);
  return section;
}

function render(snapshot) {
  document.getElementById("namespace").textContent = snapshot.namespace;
  const container = document.getElementById("services");
  container.replaceChildren(...snapshot.services.map(renderService));
  knownInstances = new Set(
    snapshot.services.flatMap((s) => s.instances.map((i) => `${s.name}/${i.instance_id}`)),
  );
}

function setStream(text) {
  document.getElementById("stream-state").textContent = text;
}

document.addEventListener("DOMContentLoaded", () => {
  const source = new EventSource("/api/mesh/events");
  source.addEventListener("open", () => setStream("connected"));
  source.addEventListener("snapshot", (event) => {
    setStream("connected");
    showError("");
    render(JSON.parse(event.data));
  });
  source.addEventListener("unavailable", (event) => {
    showError(`Discovery is unavailable: ${JSON.parse(event.data).message}`);
  });
  source.addEventListener("error", () => setStream("reconnecting…"));
});
