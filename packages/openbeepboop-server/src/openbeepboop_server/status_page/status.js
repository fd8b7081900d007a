// The OpenBeepBoop status page: asks for a key, reads GET v1/status with it,
// renders the tables and refreshes itself. Every value from the server is
// written with textContent (never parsed as HTML), so no job id, model name, node
// id or error message can inject markup. The key lives in sessionStorage:
// it dies with the tab and is never put in a URL.
"use strict";

(function () {
  const STORAGE_KEY = "openbeepboop.status.key";
  // Relative to /status, so the page also works behind a path prefix.
  const ENDPOINT = "v1/status";
  const REFRESH_MS = 5000;

  const byId = (id) => document.getElementById(id);
  let timer = null;
  let generation = 0;

  function storedKey() {
    try {
      return window.sessionStorage.getItem(STORAGE_KEY);
    } catch (err) {
      return null;
    }
  }

  function storeKey(key) {
    try {
      if (key === null) {
        window.sessionStorage.removeItem(STORAGE_KEY);
      } else {
        window.sessionStorage.setItem(STORAGE_KEY, key);
      }
    } catch (err) {
      // Storage disabled: the key then lasts until the page is reloaded.
    }
  }

  function showMessage(text, isError) {
    const box = byId("message");
    box.textContent = text;
    box.className = isError ? "message error" : "message";
    box.hidden = !text;
  }

  function stopRefreshing() {
    generation += 1;
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
  }

  function clearData() {
    byId("data").hidden = true;
    for (const id of ["models", "nodes", "failures", "keys"]) {
      byId(id).tBodies[0].replaceChildren();
    }
    for (const id of ["sum-queued", "sum-oldest", "sum-processing", "sum-nodes",
      "sum-throughput", "sum-error-rate"]) {
      byId(id).textContent = "-";
    }
    for (const id of ["window-note", "models-more", "nodes-more", "keys-more", "updated"]) {
      byId(id).textContent = "";
    }
  }

  function askForKey(text) {
    stopRefreshing();
    storeKey(null);
    clearData();
    byId("key-form").hidden = false;
    showMessage(text || "", Boolean(text));
    byId("key-input").focus();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) {
      return "-";
    }
    const whole = Math.max(0, Math.floor(seconds));
    if (whole >= 2 * 86400) return `${Math.floor(whole / 86400)}d`;
    if (whole >= 2 * 3600) return `${Math.floor(whole / 3600)}h`;
    if (whole >= 2 * 60) return `${Math.floor(whole / 60)}m`;
    return `${whole}s`;
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "-" : `${(rate * 100).toFixed(1)}%`;
  }

  function perMinute(value) {
    return Number(value || 0).toFixed(1);
  }

  function addRow(tbody, cells, attributes) {
    const row = document.createElement("tr");
    for (const [name, value] of Object.entries(attributes || {})) {
      row.setAttribute(name, String(value));
    }
    for (const [text, className] of cells) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      if (className) {
        cell.className = className;
      }
      row.appendChild(cell);
    }
    tbody.appendChild(row);
    return row;
  }

  function fillTable(id, items, emptyText, toRow) {
    const tbody = byId(id).tBodies[0];
    tbody.replaceChildren();
    if (!items.length) {
      const row = addRow(tbody, [[emptyText, "empty"]]);
      row.cells[0].colSpan = byId(id).tHead.rows[0].cells.length;
      return;
    }
    for (const item of items) {
      toRow(tbody, item);
    }
  }

  function more(id, shown, total, what) {
    byId(id).textContent = total > shown ? `… and ${total - shown} more ${what}` : "";
  }

  function render(status) {
    const now = status.generated_at;
    const win = status.window || {};
    byId("sum-queued").textContent = String(status.queued);
    byId("sum-oldest").textContent = duration(status.oldest_queued_seconds);
    byId("sum-processing").textContent = String(status.processing);
    byId("sum-nodes").textContent = String(status.nodes_online);
    byId("sum-throughput").textContent = perMinute(win.completed_per_minute);
    byId("sum-error-rate").textContent = percent(win.error_rate);
    byId("window-note").textContent =
      `Last ${duration(status.window_seconds)}: ${win.completed} completed, ` +
      `${win.failed} failed, ${win.cancelled} cancelled. Nodes count as online for ` +
      `${duration(status.node_seen_seconds)} after they last called the server.`;

    fillTable("models", status.models, "No models: no jobs waiting and no node online.",
      (tbody, model) => {
        const w = model.window || {};
        addRow(tbody, [
          [model.model, "model"],
          [model.queued, "num queued"],
          [duration(model.oldest_queued_seconds), "num oldest"],
          [model.processing, "num processing"],
          [model.nodes, "num nodes"],
          [w.completed, "num completed"],
          [w.failed, "num failed"],
          [perMinute(w.completed_per_minute), "num throughput"],
          [percent(w.error_rate), "num error-rate"],
        ], { "data-model": model.model });
      });
    more("models-more", status.models.length, status.models_total, "models");

    fillTable("nodes", status.nodes, "No node online.", (tbody, node) => {
      addRow(tbody, [
        [node.node_id, "node"],
        [node.key_name, "key"],
        [node.version || "-", "version"],
        [(node.models || []).join(", "), "models"],
        [node.in_flight, "num in-flight"],
        [`${duration(node.seen_seconds_ago)} ago`, "seen"],
      ], { "data-node": node.node_id });
    });
    more("nodes-more", status.nodes.length, status.nodes_online, "nodes");

    fillTable("failures", status.recent_failures, "No failures.", (tbody, failure) => {
      const row = addRow(tbody, [
        [failure.job_id, "job"],
        [failure.model, "model"],
        [failure.error_type || "-", "type"],
        [failure.error_message || "", "message-cell"],
        [failure.attempts, "num attempts"],
        [`${duration(now - failure.failed_at)} ago`, "when"],
      ], { "data-job": failure.job_id });
      row.className = "bad";
    });

    fillTable("keys", status.keys, "No job finished in the window.", (tbody, usage) => {
      const w = usage.window || {};
      addRow(tbody, [
        [usage.key_name, "key"],
        [w.completed, "num completed"],
        [w.failed, "num failed"],
        [w.cancelled, "num cancelled"],
        [percent(w.error_rate), "num error-rate"],
      ], { "data-key": usage.key_name });
    });
    more("keys-more", status.keys.length, status.keys_total, "keys");

    byId("updated").textContent =
      `Updated ${new Date(now * 1000).toLocaleTimeString()}; refreshing every ` +
      `${REFRESH_MS / 1000} s.`;
    byId("key-form").hidden = true;
    byId("data").hidden = false;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return (body && body.error && body.error.message) || "";
    } catch (err) {
      return "";
    }
  }

  async function refresh(mine) {
    const key = storedKey();
    if (!key) {
      askForKey("");
      return;
    }
    let response;
    try {
      response = await window.fetch(ENDPOINT, {
        headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      if (mine === generation) {
        showMessage("The server did not answer; retrying…", true);
        schedule(mine);
      }
      return;
    }
    if (mine !== generation) {
      return; // the key was changed or forgotten meanwhile
    }
    if (response.status === 401) {
      askForKey(`This key was refused (${await errorText(response) || "unknown or revoked"}).`);
      return;
    }
    if (response.status === 403) {
      askForKey("This key may not read the status: it needs an ADMIN or METRICS key.");
      return;
    }
    if (!response.ok) {
      showMessage(`The server answered ${response.status}; retrying…`, true);
      schedule(mine);
      return;
    }
    const status = await response.json();
    if (mine !== generation) {
      return;
    }
    showMessage("", false);
    render(status);
    schedule(mine);
  }

  function schedule(mine) {
    timer = window.setTimeout(() => refresh(mine), REFRESH_MS);
  }

  function start() {
    stopRefreshing();
    refresh(generation);
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = byId("key-input");
      const key = input.value.trim();
      input.value = "";
      if (!key) {
        return;
      }
      storeKey(key);
      showMessage("Loading…", false);
      byId("key-form").hidden = true;
      start();
    });
    byId("forget").addEventListener("click", () => askForKey(""));
    start();
  });
})();
