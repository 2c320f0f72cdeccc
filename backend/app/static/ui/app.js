// memdb's live data page: the tables, a page of records and the change tail.
// Every value from the service reaches the DOM as text (textContent), never
// as markup. The API key stays in this tab's sessionStorage.
"use strict";
(function () {
  const API = "/api/v1";
  const KEY = "memdb.apiKey";
  const TAIL_MAX = 200; // rows kept in the change tail
  const REFRESH_MS = 300; // changes within this window cost one refresh
  const RETRY_MS = 3000; // before reconnecting a feed that was refused
  const CELL_MAX = 120; // characters shown in a cell (the rest in its title)
  const COUNTLESS = new Set(["update", "patch"]); // ops that keep the counts

  const $ = (id) => document.getElementById(id);
  const view = { table: null, query: "", limit: 25, offset: 0 };
  let tables = [];
  let source = null;
  let retry = null;
  let pending = null;
  let busy = false;
  let stale = { tables: false, page: false };
  let tablesSeq = 0;
  let pageSeq = 0;

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function storeKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY, value);
      else sessionStorage.removeItem(KEY);
    } catch (e) {
      /* storage refused: the key lasts as long as the input */
    }
  }

  function node(tag, text, className) {
    const el = document.createElement(tag);
    if (text !== undefined) el.textContent = text;
    if (className) el.className = className;
    return el;
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) headers["X-API-Key"] = key;
    let res;
    try {
      res = await fetch(API + path, { headers, cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new ApiError(0, "network_error", "the service cannot be reached", []);
    }
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      body = null;
    }
    if (res.ok) return body;
    const err = body && typeof body.error === "object" && body.error ? body.error : {};
    const failure = new ApiError(
      res.status,
      String(err.code || "http_" + res.status),
      String(err.message || res.statusText || "the request failed"),
      Array.isArray(err.details) ? err.details : []
    );
    if (res.status === 401) askForKey();
    throw failure;
  }

  function showError(error) {
    const box = $("error");
    if (!error) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    box.replaceChildren(node("strong", error.code), document.createTextNode(" " + error.message));
    const details = (error.details || []).filter((d) => d && d.msg).slice(0, 10);
    if (details.length) {
      const list = node("ul");
      for (const d of details) {
        const where = Array.isArray(d.loc) ? d.loc.join(".") + ": " : "";
        list.append(node("li", where + String(d.msg)));
      }
      box.append(list);
    }
    box.hidden = false;
  }

  function askForKey() {
    disconnect();
    $("keybar").classList.add("wanted");
    $("key-note").textContent = storedKey()
      ? "The service refused this key: enter another."
      : "The service needs an API key: enter it here.";
    $("key").focus();
  }

  // tables

  async function loadTables() {
    const seq = ++tablesSeq;
    const answer = await api("/tables");
    if (seq !== tablesSeq) return;
    tables = Array.isArray(answer) ? answer : [];
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.table
      : undefined;
    const items = tables.map((t) => {
      const button = node("button");
      button.type = "button";
      button.dataset.table = String(t.name);
      button.append(node("span", String(t.name), "name"), node("span", String(t.count), "count"));
      if (t.name === view.table) button.setAttribute("aria-current", "true");
      const li = node("li");
      li.append(button);
      return li;
    });
    $("tables").replaceChildren(...items);
    $("tables-empty").hidden = tables.length > 0;
    if (focused !== undefined) {
      const again = [...$("tables").querySelectorAll("button")].find((b) => b.dataset.table === focused);
      if (again) again.focus();
    }
  }

  function select(name) {
    view.table = name;
    view.offset = 0;
    $("records-title").textContent = name;
    for (const b of $("tables").querySelectorAll("button")) {
      if (b.dataset.table === name) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    }
    loadPage();
  }

  // records

  function rank(column) {
    if (column === "id") return 0;
    return column === "created_at" || column === "updated_at" ? 2 : 1;
  }

  function cell(value) {
    const td = node("td");
    if (value === undefined) {
      td.className = "missing";
      return td;
    }
    const text = typeof value === "string" ? value : JSON.stringify(value);
    if (typeof value !== "string") td.className = "json";
    if (text.length > CELL_MAX) {
      td.textContent = text.slice(0, CELL_MAX) + "…";
      td.title = text.slice(0, 4000);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function renderRecords(items) {
    const columns = [];
    const seen = new Set();
    for (const item of items) {
      for (const k of Object.keys(item)) {
        if (!seen.has(k)) {
          seen.add(k);
          columns.push(k);
        }
      }
    }
    columns.sort((a, b) => rank(a) - rank(b));
    const head = node("tr");
    for (const c of columns) head.append(node("th", c));
    const rows = items.map((item) => {
      const tr = node("tr");
      for (const c of columns) tr.append(cell(item[c]));
      return tr;
    });
    const table = $("records");
    table.tHead.replaceChildren(...(columns.length ? [head] : []));
    table.tBodies[0].replaceChildren(...rows);
  }

  async function loadPage(again) {
    if (!view.table) return;
    const seq = ++pageSeq;
    const params = new URLSearchParams(view.query.trim().replace(/^\?/, ""));
    params.set("limit", String(view.limit));
    params.set("offset", String(view.offset));
    let page;
    try {
      page = await api("/data/" + encodeURIComponent(view.table) + "?" + params);
    } catch (error) {
      if (seq !== pageSeq) return;
      showError(error);
      renderRecords([]);
      $("range").textContent = "";
      $("prev").disabled = $("next").disabled = true;
      return;
    }
    if (seq !== pageSeq) return;
    const items = Array.isArray(page.items) ? page.items.filter((i) => i && typeof i === "object") : [];
    const total = Number(page.total) || 0;
    if (!items.length && view.offset > 0 && total > 0 && !again) {
      view.offset = Math.floor((total - 1) / view.limit) * view.limit; // the page emptied: show the last
      return loadPage(true);
    }
    showError(null);
    renderRecords(items);
    const last = view.offset + items.length;
    $("range").textContent = total ? `${view.offset + 1}–${last} of ${total}` : "No records.";
    $("prev").disabled = view.offset <= 0;
    $("next").disabled = last >= total;
  }

  function runQuery() {
    view.query = $("query").value;
    view.limit = Number($("size").value) || 25;
    view.offset = 0;
    loadPage();
  }

  // the change tail

  function setLive(state) {
    const live = $("live");
    live.dataset.state = state;
    live.textContent = { live: "● live", connecting: "connecting…", off: "offline" }[state];
  }

  function addChange(change) {
    const at = typeof change.at === "string" ? change.at : "";
    const tr = node("tr");
    tr.dataset.op = String(change.op);
    tr.dataset.table = String(change.table ?? "");
    if (change.id != null) tr.dataset.id = String(change.id);
    const time = node("td", at.slice(11, 23) || at, "time");
    time.title = at;
    tr.append(
      time,
      node("td", String(change.op), "op"),
      node("td", String(change.table ?? "")),
      node("td", change.id == null ? "—" : String(change.id), "id")
    );
    tr.lastChild.title = tr.lastChild.textContent;
    const tail = $("tail");
    tail.prepend(tr);
    while (tail.rows.length > TAIL_MAX) tail.deleteRow(-1);
  }

  function touched(change) {
    if (!COUNTLESS.has(change.op)) stale.tables = true;
    if (view.table && (!change.table || change.table === view.table)) stale.page = true;
    schedule(REFRESH_MS);
  }

  function schedule(delay) {
    if (pending === null) pending = setTimeout(refresh, delay);
  }

  async function refresh() {
    pending = null;
    if (document.hidden) return; // caught up when the tab shows again
    if (busy) return schedule(REFRESH_MS);
    const work = stale;
    stale = { tables: false, page: false };
    busy = true;
    try {
      if (work.tables) await loadTables().catch(showError);
      if (work.page) await loadPage();
    } finally {
      busy = false;
    }
  }

  function disconnect() {
    clearTimeout(retry);
    retry = null;
    if (source) source.close();
    source = null;
    setLive("off");
  }

  function connect() {
    disconnect();
    const params = new URLSearchParams({ since: "now" });
    const key = storedKey();
    if (key) params.set("key", key); // EventSource sends no headers
    const es = new EventSource(API + "/changes?" + params);
    source = es;
    setLive("connecting");
    es.onopen = () => setLive("live");
    es.onmessage = (event) => {
      let change;
      try {
        change = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (!change || typeof change !== "object") return;
      addChange(change);
      touched(change);
    };
    // the service lets the stream go: the browser resumes from its cursor
    es.addEventListener("resume", () => setLive("connecting"));
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState !== EventSource.CLOSED) return setLive("connecting");
      source = null; // refused (a key, a cursor gone): start afresh in a while
      setLive("off");
      retry = setTimeout(start, RETRY_MS);
    };
  }

  async function start() {
    disconnect();
    try {
      await loadTables();
    } catch (error) {
      showError(error);
      if (error.status !== 401) retry = setTimeout(start, RETRY_MS);
      return;
    }
    connect();
    if (view.table) loadPage();
  }

  function useKey() {
    const value = $("key").value.trim();
    storeKey(value);
    $("keybar").classList.remove("wanted");
    $("key-note").textContent = value ? "Key in use in this tab." : "No key in use.";
    showError(null);
    start();
  }

  // wiring

  $("key").value = storedKey();
  $("key-save").addEventListener("click", useKey);
  $("key").addEventListener("keydown", (e) => {
    if (e.key === "Enter") useKey();
  });
  $("key-forget").addEventListener("click", () => {
    $("key").value = "";
    useKey();
  });
  $("tables").addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (button) select(button.dataset.table);
  });
  $("tables-reload").addEventListener("click", () => loadTables().catch(showError));
  $("run").addEventListener("click", runQuery);
  $("size").addEventListener("change", runQuery);
  $("query").addEventListener("keydown", (e) => {
    if (e.key === "Enter") runQuery();
  });
  $("prev").addEventListener("click", () => {
    view.offset = Math.max(0, view.offset - view.limit);
    loadPage();
  });
  $("next").addEventListener("click", () => {
    view.offset += view.limit;
    loadPage();
  });
  $("tail").addEventListener("click", (e) => {
    const row = e.target.closest("tr");
    if (row && tables.some((t) => t.name === row.dataset.table)) select(row.dataset.table);
  });
  $("tail-clear").addEventListener("click", () => $("tail").replaceChildren());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && (stale.tables || stale.page)) schedule(0);
  });
  window.addEventListener("pagehide", disconnect);
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) start();
  });

  start();
})();
