// ITS dashboard, Cluster panel: the release's pods from /api/cluster (the Kubernetes API, read by
// the dashboard's read-only ServiceAccount). Shown only when the dashboard reaches a cluster.
"use strict";

(function () {
  const REFRESH_MS = 3000;

  function node(tag, attrs, text) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 120) return seconds + "s";
    if (seconds < 7200) return Math.floor(seconds / 60) + "m";
    if (seconds < 172800) return Math.floor(seconds / 3600) + "h";
    return Math.floor(seconds / 86400) + "d";
  }

  function section() {
    let s = document.getElementById("panel-cluster");
    if (!s) {
      s = node("section", { id: "panel-cluster", class: "panel wide" });
      s.append(node("h2", {}, "Cluster"), node("div", { class: "body" }));
      document.querySelector("main").append(s);
    }
    return s;
  }

  function render(view) {
    const s = section();
    const body = s.querySelector(".body");
    body.replaceChildren();
    s.dataset.status = view.error ? "error" : "ok";
    const info = node("p", { class: "muted" },
      `namespace ${view.namespace || "–"} · ${view.selector} · ${view.pods.length} pods`);
    body.append(info);
    if (view.error) body.append(node("p", { class: "bad" }, view.error));
    const columns = [["name", "pod"], ["component", "component"], ["phase", "phase"],
      ["ready", "ready"], ["restarts", "restarts"], ["last_termination", "last termination"],
      ["image_tag", "image tag"], ["age_s", "age"]];
    const table = node("table", { id: "cluster-pods" });
    const head = node("tr");
    for (const [, label] of columns) head.append(node("th", {}, label));
    const thead = node("thead");
    thead.append(head);
    table.append(thead);
    const tbody = node("tbody");
    for (const pod of view.pods) {
      const tr = node("tr", { "data-pod": pod.name });
      for (const [key] of columns) {
        let value = pod[key];
        let cls = "";
        if (key === "age_s") value = age(value);
        if (key === "ready") cls = pod.all_ready ? "good" : "bad";
        if (key === "phase") cls = value === "Running" || value === "Succeeded" ? "good" : "warn";
        if (key === "restarts" && value > 0) cls = "warn";
        const td = node("td", cls ? { class: cls } : {}, value === null ? "–" : value);
        tr.append(td);
      }
      tbody.append(tr);
    }
    table.append(tbody);
    body.append(table);
  }

  async function tick() {
    try {
      const response = await fetch("/api/cluster", { cache: "no-store" });
      if (response.ok) {
        const view = await response.json();
        if (view.enabled) render(view);
        else return; // not in a cluster: no panel, no more polling
      }
    } catch (err) {
      // the next tick retries; the main panels show the connection state
    }
    setTimeout(tick, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", tick);
})();
