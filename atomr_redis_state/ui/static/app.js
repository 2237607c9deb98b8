// The inspector's pages: workflows, a workflow's runs, and one run. Each page is its own
// address (links work with the keyboard, in new tabs, and when shared); the data comes from
// the JSON API and stays live through server-sent events.

import { get, post, download, token, setToken, takeTokenFromAddress, listen, ApiError } from "./api.js";
import { h, fill, safe, when, badge, setTones, tickTimes, qs, link } from "./dom.js";
import { jsonTree } from "./tree.js";

const main = document.getElementById("main");
const TIMELINE_PAGE = 50;
const COUNTS_EVERY_MS = 5000;
const STATES = ["failed", "stalled", "paused", "queued", "running", "forked", "idle", "completed"];
// Filter chips in the order an on-call engineer looks: what is broken first.
let info = { writes: false, can_answer: false, store: "" };

// ---- the frame: header, live indicator, notices -------------------------------------------

function setLive(state, note) {
  const el = document.getElementById("live");
  const text = { live: "Live", connecting: "Reconnecting…", gap: "Events missed" }[state] || state;
  fill(el, h(`span.dot.dot-${state}`, { "aria-hidden": "true" }), text);
  el.title = note || (state === "live" ? "Updates arrive as workers save checkpoints" : "");
}

let noticeTimer = null;
function notify(text, kind = "info", { sticky = false } = {}) {
  const el = document.getElementById("notice");
  el.className = `notice notice-${kind}`;
  fill(el, h("span", {}, text), h("button.link", { type: "button", onclick: () => { el.hidden = true; } }, "Dismiss"));
  el.hidden = false;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => { el.hidden = true; }, 8000);
}

function writesControl() {
  const box = document.getElementById("writes");
  if (!info.writes) {
    fill(box, h("span.pill", { title: "Start with --allow-writes to answer, fork and delete" }, "Read-only"));
    return;
  }
  if (token()) {
    fill(box, h("span.pill.pill-on", {}, "Writes on"),
      h("button.link", { type: "button", onclick: () => { setToken(null); writesControl(); } }, "Forget token"));
    return;
  }
  const input = h("input", { type: "password", id: "token", placeholder: "write token", autocomplete: "off", "aria-label": "Write token" });
  const form = h("form.token-form", {
    onsubmit: (e) => { e.preventDefault(); if (input.value.trim()) { setToken(input.value.trim()); writesControl(); } },
  }, h("span.pill.pill-on", {}, "Writes on"), input, h("button", { type: "submit" }, "Use token"));
  fill(box, form);
}

function crumbs(...parts) {
  const items = parts.map((part, i) => {
    const last = i === parts.length - 1;
    return h("li", {}, last ? h("span", { "aria-current": "page" }, part.text) : h("a", { href: part.href }, part.text));
  });
  return h("nav.crumbs", { "aria-label": "Breadcrumb" }, h("ol", {}, items));
}

function errorBox(error) {
  const text = error instanceof ApiError ? error.message : String(error && error.message || error);
  return h("div.card.card-error", { role: "alert" }, h("strong", {}, "Could not load: "), safe(text));
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function shortRun(runId) {
  const at = runId.indexOf("~fork-");
  return at < 0 ? runId : `…${runId.slice(at, at + 14)}`;
}

function duration(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.round(ms / 60000)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function pathText(path) {
  return path.map((part, i) => typeof part === "number" ? `[${part}]` :
    /^[A-Za-z_][A-Za-z0-9_-]*$/.test(part) ? (i ? `.${part}` : part) : `[${JSON.stringify(part)}]`).join("");
}

function compact(value, limit = 300) {
  const text = safe(JSON.stringify(value));
  return text.length > limit ? [text.slice(0, limit), h("span.muted", {}, ` … ${(text.length - limit).toLocaleString()} more characters`)] : text;
}

// ---- workflows -----------------------------------------------------------------------------

async function workflowsPage() {
  document.title = "Workflows · atomr inspector";
  const list = h("ul.wf-list");
  const input = h("input", { id: "open-wf", name: "workflow", required: true, placeholder: "workflow id", autocomplete: "off" });
  const form = h("form.inline-form", { action: "/workflow", method: "get" },
    h("label", { for: "open-wf" }, "Open a workflow by id"), input, h("button", { type: "submit" }, "Open"));
  const pager = h("div.pager");
  fill(main, h("div.page-head", {}, h("h1", {}, "Workflows"), h("p.muted", {}, info.store ? `Store: ${info.store}` : "")),
    h("section.card", { "aria-labelledby": "wf-h" }, h("h2.visually-hidden", { id: "wf-h" }, "Workflows under this prefix"), list, pager), form);
  const load = async (after) => {
    try {
      const page = await get("workflows", { after, limit: 100 });
      if (!after) list.replaceChildren();
      const rows = page.workflows.map((wf) => {
        const summary = h("span.wf-counts", { "aria-live": "polite" }, h("span.muted.small", {}, "counting…"));
        list.append(h("li", {}, h("a.wf", { href: link("/workflow", { workflow: wf.workflow_id }) }, safe(wf.workflow_id)), summary));
        return [wf.workflow_id, summary];
      });
      countEach(rows);
      if (!list.children.length) {
        list.append(h("li.muted", {}, "No workflow has a run under this prefix."));
      }
      fill(pager, page.next_after ? h("button", { type: "button", onclick: () => load(page.next_after) }, "More workflows") : null);
    } catch (error) {
      fill(pager, errorBox(error));
    }
  };
  await load(null);
}

const ATTENTION = ["failed", "stalled", "paused"];

/** Fill in each workflow's run counts, a few requests at a time: what needs a look first. */
async function countEach(rows) {
  const queue = [...rows];
  const worker = async () => {
    while (queue.length) {
      const [workflow, el] = queue.shift();
      try {
        const counts = await get("counts", { workflow });
        const chips = ATTENTION.filter((state) => counts.states[state]).map((state) =>
          h("a.mini", { href: link("/workflow", { workflow, state }), title: `${counts.states[state]} ${state} runs` },
            badge(state), h("span.count", {}, String(counts.states[state]))));
        fill(el, chips, h("span.muted.small", {}, `${counts.total}${counts.partial ? "+" : ""} run${counts.total === 1 ? "" : "s"}`));
      } catch (error) {
        fill(el, h("span.error-text.small", {}, "could not count"));
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

// ---- a workflow's runs ---------------------------------------------------------------------

async function workflowPage() {
  const wf = qs("workflow");
  if (!wf) { location.href = "/"; return; }
  document.title = `${wf} · atomr inspector`;
  const selected = new Set((qs("state") || "").split(",").filter(Boolean));
  let query = qs("q") || "";
  const cursors = [qs("after") || null];
  const chips = h("div.chips", { role: "group", "aria-label": "Filter by state" });
  const search = h("input", { type: "search", id: "run-search", placeholder: "filter by run id", value: query, autocomplete: "off" });
  const table = h("div.runs");
  const pager = h("div.pager");
  const total = h("span.muted");
  fill(main,
    crumbs({ text: "Workflows", href: "/" }, { text: safe(wf) }),
    h("div.page-head", {}, h("h1.mono", {}, safe(wf)), total),
    h("div.toolbar", {}, chips, h("label.visually-hidden", { for: "run-search" }, "Filter by run id"), search),
    h("section.card.flush", { "aria-label": "Runs" }, table, pager));

  let counts = null;
  const drawChips = () => {
    const states = counts ? counts.states : {};
    // Every state with runs; the ones that need a look stay even at zero (a zero is news too).
    const known = [...new Set([...STATES, ...Object.keys(states)])].filter((state) =>
      state !== "not_found" && (ATTENTION.includes(state) || states[state] || selected.has(state)));
    const all = h("button.chip", { type: "button", "aria-pressed": String(selected.size === 0), onclick: () => { selected.clear(); reload(); } },
      "All", counts ? h("span.count", {}, String(counts.total) + (counts.partial ? "+" : "")) : null);
    fill(chips, all, known.map((state) => h(`button.chip.chip-${state}`, {
      type: "button", "aria-pressed": String(selected.has(state)),
      onclick: () => { selected.has(state) ? selected.delete(state) : selected.add(state); reload(); },
    }, state, h("span.count", {}, String(states[state] || 0)))));
    fill(total, counts ? `${counts.total}${counts.partial ? "+" : ""} runs · ${counts.forks} forks` : "");
  };
  const loadCounts = async () => {
    try { counts = await get("counts", { workflow: wf }); } catch (error) { counts = null; }
    drawChips();
  };
  const syncAddress = () => {
    const address = link("/workflow", { workflow: wf, state: [...selected].join(","), q: query, after: cursors[cursors.length - 1] });
    history.replaceState(null, "", address);
  };
  const loadPage = async ({ flash = new Set() } = {}) => {
    const after = cursors[cursors.length - 1];
    let page;
    try {
      page = await get("runs", { workflow: wf, state: [...selected].join(","), q: query, after, limit: 25 });
    } catch (error) {
      fill(table, errorBox(error));
      return;
    }
    fill(table, runsTable(wf, page.runs, flash));
    if (!page.runs.length) {
      table.append(h("p.empty", {}, selected.size || query ? "No runs match these filters." : "No runs in this workflow."));
    }
    const paging = cursors.length > 1 || page.next_after;
    fill(pager, !paging ? null : [
      cursors.length > 1 ? h("button", { type: "button", onclick: () => { cursors.pop(); syncAddress(); loadPage(); } }, "← Previous") : null,
      cursors.length > 1 ? h("button", { type: "button", onclick: () => { cursors.splice(1); syncAddress(); loadPage(); } }, "First page") : null,
      h("span.spacer"),
      page.next_after ? h("button", { type: "button", onclick: () => { cursors.push(page.next_after); syncAddress(); loadPage(); } }, "Next page →") : null]);
    drawChips();
  };
  const reload = () => { cursors.splice(1); syncAddress(); loadPage(); };
  search.addEventListener("input", debounce(() => { query = search.value.trim(); reload(); }, 300));
  drawChips();
  await Promise.all([loadPage(), loadCounts()]);

  const changed = new Set();
  // Counting reads every run's status: at most once per COUNTS_EVERY_MS, however busy the store.
  let countedAt = Date.now();
  let countTimer = null;
  const recount = () => {
    if (countTimer) return;
    const wait = Math.max(0, countedAt + COUNTS_EVERY_MS - Date.now());
    countTimer = setTimeout(async () => { countTimer = null; countedAt = Date.now(); await loadCounts(); }, wait);
  };
  const refresh = debounce(() => { const flash = new Set(changed); changed.clear(); loadPage({ flash }); recount(); }, 700);
  listen({ workflow: wf }, {
    onState: setLive,
    onEvent: (event) => { changed.add(event.run_id); refresh(); },
    onResync: (why) => { notify(`Re-read the runs: ${why}.`, "warn"); loadPage(); loadCounts(); },
  });
}

function runDetail(run) {
  const parts = [];
  if (run.pause) parts.push(h("span", {}, "waiting at ", h("code", {}, safe(run.pause.step)), ` (${run.pause.kind})`));
  if (run.last_error) parts.push(h("span.error-text", {}, h("code", {}, safe(run.last_error.step)), ` failed: ${safe(run.last_error.error_type)} after ${run.last_error.attempts} attempt${run.last_error.attempts === 1 ? "" : "s"}`));
  if (run.lease) parts.push(h("span", {}, "held by ", h("code", {}, safe(run.lease.owner))));
  else if (run.state === "stalled") parts.push(h("span.muted", {}, "no worker holds it: run() takes it over"));
  return parts.flatMap((p, i) => (i ? [" · ", p] : [p]));
}

function runsTable(wf, runs, flash) {
  const rows = runs.map((run) => h(`tr${flash.has(run.run_id) ? ".flash" : ""}`, { dataset: { run: run.run_id } },
    h("td.run-cell", { "data-label": "Run" },
      h("a.mono", { href: link("/run", { workflow: wf, run: run.run_id }), title: safe(run.run_id) }, safe(run.run_id)),
      run.fork ? h("span.tag", {}, "fork") : null),
    h("td", { "data-label": "State" }, badge(run.state)),
    h("td.num", { "data-label": "Step" }, run.super_step ?? "-"),
    h("td.label-cell", { "data-label": "Label" }, h("code", {}, safe(run.label || ""))),
    h("td", { "data-label": "Updated" }, when(run.updated_at_ms)),
    h("td.detail", { "data-label": "Detail" }, runDetail(run))));
  return h("table.table", {},
    h("thead", {}, h("tr", {}, ["Run", "State", "Step", "Label", "Updated", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
}

// ---- one run -------------------------------------------------------------------------------

async function runPage() {
  const wf = qs("workflow");
  const run = qs("run");
  if (!wf || !run) { location.href = "/"; return; }
  document.title = `${shortRun(run)} · ${wf} · atomr inspector`;
  const view = { step: qs("step") === null ? null : Number(qs("step")), checkpoints: [], lineage: [], latest: null, origin: null };
  const summary = h("section.card.summary", { "aria-label": "Run summary" });
  const alerts = h("div.alerts");
  const timeline = h("ol.timeline");
  const olderBox = h("div.pager");
  const state = h("div.state-body");
  const stateHead = h("div.section-head");
  const compare = h("div.compare");
  const lineage = h("div.lineage");
  fill(main,
    crumbs({ text: "Workflows", href: "/" }, { text: safe(wf), href: link("/workflow", { workflow: wf }) }, { text: safe(shortRun(run)) }),
    summary, alerts,
    h("div.grid", {},
      h("section.card.timeline-card", { "aria-labelledby": "tl-h" }, h("h2", { id: "tl-h" }, "Timeline"),
        h("p.muted.small", {}, "Newest first. Pick a checkpoint to see the state at that step."), timeline, olderBox),
      h("div.side", {},
        h("section.card", { "aria-labelledby": "st-h", id: "state" }, stateHead, state),
        h("section.card", { "aria-labelledby": "cmp-h", id: "compare" }, h("h2", { id: "cmp-h" }, "Compare checkpoints"), compare),
        h("section.card", { "aria-labelledby": "ln-h", id: "lineage" }, h("h2", { id: "ln-h" }, "Fork tree"), lineage))));

  let status = null;
  const loadSummary = async () => {
    try {
      status = await get("run", { workflow: wf, run });
      drawSummary(summary, alerts, wf, run, status, view, refreshAll);
    } catch (error) {
      status = null;
      fill(summary, errorBox(error));
      fill(alerts);
    }
  };

  // The timeline reads TIMELINE_PAGE checkpoints at first (naming the steps each layer ran
  // means reading those checkpoints), and after a live event only the newest few.
  const loadTimeline = async ({ newest = null } = {}) => {
    try {
      const page = await get("history", { workflow: wf, run, limit: newest ?? TIMELINE_PAGE });
      if (newest === null) {
        view.checkpoints = page.checkpoints;
        view.olderBefore = page.next_before;
      } else {
        const first = page.checkpoints.length ? page.checkpoints[0].super_step : Infinity;
        view.checkpoints = [...view.checkpoints.filter((cp) => cp.super_step < first), ...page.checkpoints];
      }
      view.latest = view.checkpoints.length ? view.checkpoints[view.checkpoints.length - 1].super_step : null;
      drawTimeline();
    } catch (error) {
      fill(timeline, h("li", {}, errorBox(error)));
    }
  };
  const drawTimeline = () => {
    fill(timeline, [...view.checkpoints].reverse().map(timelineRow));
    const before = view.olderBefore;
    fill(olderBox, before !== null && before !== undefined ? h("button", {
      type: "button",
      onclick: async () => {
        const older = await get("history", { workflow: wf, run, limit: TIMELINE_PAGE, before });
        view.checkpoints = [...older.checkpoints, ...view.checkpoints];
        view.olderBefore = older.next_before;
        drawTimeline();
      },
    }, "Older checkpoints") : null);
    markSelected();
  };
  const timelineRow = (cp) => {
    const href = link("/run", { workflow: wf, run, step: cp.super_step });
    const ran = Array.isArray(cp.steps) && cp.steps.length ? h("span.ran", {}, cp.steps.map((name) => h("span.step-chip", {}, safe(name)))) : null;
    const forks = cp.forked_into && cp.forked_into.length ? h("span.small.muted", {}, `forked into ${cp.forked_into.length} run${cp.forked_into.length === 1 ? "" : "s"}`) : null;
    const took = cp.elapsed_ms !== null && cp.elapsed_ms !== undefined ? ` · +${duration(cp.elapsed_ms)}` : "";
    const a = h("a.cp", {
      href, dataset: { step: cp.super_step },
      onclick: (e) => { if (e.metaKey || e.ctrlKey || e.shiftKey) return; e.preventDefault(); selectStep(cp.super_step); },
    },
      h("span.cp-step", {}, String(cp.super_step)),
      h("span.cp-main", {}, h("span.cp-label", {}, safe(cp.label || "(no label)")), ran, forks),
      h("span.cp-time", {}, when(cp.timestamp_ms), took));
    const previous = view.checkpoints.filter((c) => c.super_step < cp.super_step).pop();
    const diffButton = previous ? h("button.icon", {
      type: "button", title: `Compare with step ${previous.super_step}`, "aria-label": `Compare step ${cp.super_step} with step ${previous.super_step}`,
      onclick: () => { compareWith({ run, step: previous.super_step }, { run, step: cp.super_step }); },
    }, "Δ") : null;
    return h("li", { dataset: { step: cp.super_step } }, a, diffButton);
  };
  const markSelected = () => {
    const current = view.step ?? view.latest;
    for (const a of timeline.querySelectorAll("a.cp")) {
      if (Number(a.dataset.step) === current) a.setAttribute("aria-current", "step"); else a.removeAttribute("aria-current");
    }
  };

  const loadState = async () => {
    try {
      const found = await get("state", { workflow: wf, run, step: view.step });
      const at = found.super_step;
      const fetcher = (part) => async (path, { offset = 0, full = false } = {}) =>
        (await get("state", { workflow: wf, run, step: at, part, path: JSON.stringify(path), offset, full: full ? 1 : "" })).node;
      const forkButton = info.writes ? h("button", { type: "button", onclick: () => forkForm(found) }, "Fork from here…") : null;
      fill(stateHead, h("h2", { id: "st-h" }, `State at step ${at}`),
        h("span.muted", {}, h("code", {}, safe(found.label || "")), " · ", when(found.timestamp_ms)), h("span.spacer"), forkButton);
      const meta = h("details.meta", {}, h("summary", {}, "Runner metadata"));
      meta.addEventListener("toggle", async () => {
        if (!meta.open || meta.dataset.loaded) return;
        meta.dataset.loaded = "1";
        try {
          meta.append(jsonTree(await fetcher("metadata")([]), fetcher("metadata")));
        } catch (error) { meta.append(errorBox(error)); }
      });
      fill(state, found.node.n === 0 ? h("p.muted", {}, "No channels.") : jsonTree(found.node, fetcher("values")), meta);
    } catch (error) {
      fill(stateHead, h("h2", { id: "st-h" }, "State"));
      fill(state, errorBox(error));
    }
  };

  const forkForm = (found) => {
    const area = h("textarea", { id: "fork-edits", rows: 4, spellcheck: "false", placeholder: '{"channel": "new JSON value"}' });
    const result = h("div", { role: "status" });
    const form = h("form.card.inset", {
      onsubmit: async (e) => {
        e.preventDefault();
        let edits = {};
        try { edits = area.value.trim() ? JSON.parse(area.value) : {}; } catch (error) { fill(result, h("p.error-text", {}, `Not JSON: ${error.message}`)); return; }
        try {
          const made = await post("fork", { workflow: wf, run, step: found.super_step, edits });
          location.href = link("/run", { workflow: wf, run: made.run_id });
        } catch (error) { fill(result, h("p.error-text", {}, safe(error.message))); }
      },
    }, h("label", { for: "fork-edits" }, `Fork step ${found.super_step} into a new run, with channel edits (JSON object, optional)`),
      area, h("div.actions", {}, h("button.primary", { type: "submit" }, "Fork"), h("button", { type: "button", onclick: () => form.remove() }, "Cancel")), result);
    state.prepend(form);
    area.focus();
  };

  const selectStep = (step) => {
    view.step = step;
    history.replaceState(null, "", link("/run", { workflow: wf, run, step }));
    markSelected();
    loadState();
    document.getElementById("state").scrollIntoView({ block: "nearest" });
  };

  const compareWith = async (a, b) => {
    delete compare.dataset.auto;
    await drawCompare(a, b);
    document.getElementById("compare").scrollIntoView({ block: "nearest" });
  };
  const stepsOf = async (member) => member === run ? view.checkpoints :
    (await get("history", { workflow: wf, run: member, limit: 500, steps: 0 })).checkpoints;
  const drawCompare = async (a, b, { compareNow = true } = {}) => {
    const members = view.lineage.length ? view.lineage : [run];
    const side = (name, chosen) => {
      const runSelect = h("select", { id: `${name}-run`, "aria-label": `Run ${name.toUpperCase()}` },
        members.map((m) => h("option", { value: m, selected: m === chosen.run }, m === run ? `this run` : shortRun(m))));
      const stepSelect = h("select", { id: `${name}-step`, "aria-label": `Step ${name.toUpperCase()}` });
      const fillSteps = async (wanted) => {
        const steps = await stepsOf(runSelect.value);
        fill(stepSelect, [...steps].reverse().map((cp) => h("option", { value: cp.super_step, selected: cp.super_step === wanted }, `${cp.super_step} · ${safe(cp.label)}`)));
      };
      runSelect.addEventListener("change", () => fillSteps(null));
      return { el: h("div.side-pick", {}, h("span.pick-name", {}, name.toUpperCase()), runSelect, stepSelect), runSelect, stepSelect, ready: fillSteps(chosen.step) };
    };
    const left = side("a", a);
    const right = side("b", b);
    await Promise.all([left.ready, right.ready]);
    const out = h("div.diff-out", { "aria-live": "polite" });
    const form = h("form.compare-form", {
      onsubmit: async (e) => {
        e.preventDefault();
        await runDiff(out, { run: left.runSelect.value, step: left.stepSelect.value }, { run: right.runSelect.value, step: right.stepSelect.value });
      },
    }, left.el, h("span.arrow", { "aria-hidden": "true" }, "→"), right.el, h("button.primary", { type: "submit" }, "Compare"));
    fill(compare, form, out);
    if (!compareNow) {
      fill(out, h("p.muted.small", {}, "Pick two checkpoints, of this run or of its forks, and compare them."));
    } else if (a.step !== null && b.step !== null) {
      await runDiff(out, a, b);
    }
  };
  const runDiff = async (out, a, b) => {
    fill(out, h("p.muted", {}, "Comparing…"));
    try {
      const d = await get("diff", { workflow: wf, a_run: a.run, a_step: a.step, b_run: b.run, b_step: b.step });
      fill(out, diffView(d));
    } catch (error) { fill(out, errorBox(error)); }
  };

  const loadLineage = async () => {
    try {
      const found = await get("lineage", { workflow: wf, run });
      const byId = new Map(found.nodes.map((node) => [node.run_id, node]));
      view.lineage = found.nodes.filter((node) => node.exists).map((node) => node.run_id);
      view.origin = byId.get(run) || null;
      fill(lineage, found.nodes.length > 1 ? null : h("p.muted.small", {}, "No forks: this run is its whole lineage."),
        h("ul.forktree", {}, forkNode(wf, found.root, byId, found.states)));
      if (status) drawSummary(summary, alerts, wf, run, status, view, refreshAll);
    } catch (error) { fill(lineage, errorBox(error)); }
  };

  async function refreshAll() {
    await Promise.all([loadSummary(), loadTimeline(), loadLineage()]);
    await loadState();
    if (!compare.children.length || compare.dataset.auto) {
      const latest = view.checkpoints.length ? view.checkpoints[view.checkpoints.length - 1] : null;
      const previous = view.checkpoints.length > 1 ? view.checkpoints[view.checkpoints.length - 2] : latest;
      compare.dataset.auto = "1";
      await drawCompare({ run, step: previous ? previous.super_step : null }, { run, step: latest ? latest.super_step : null }, { compareNow: false });
    }
  }
  compare.addEventListener("submit", () => { delete compare.dataset.auto; });
  await refreshAll();

  const newSteps = new Set();
  const refreshRun = debounce(async () => {
    const stayOnLatest = view.step === null;
    const fresh = Math.min(TIMELINE_PAGE, newSteps.size + 2);
    await Promise.all([loadSummary(), loadTimeline({ newest: fresh })]);
    for (const step of newSteps) timeline.querySelector(`li[data-step="${step}"]`)?.classList.add("flash");
    newSteps.clear();
    if (stayOnLatest) loadState();
  }, 400);
  const refreshLineage = debounce(loadLineage, 600);
  listen({ workflow: wf }, {
    onState: setLive,
    onEvent: (event) => {
      if (event.run_id === run) {
        if (event.kind === "deleted") { notify("This run was deleted.", "warn", { sticky: true }); loadSummary(); return; }
        if (event.super_step !== null) newSteps.add(event.super_step);
        refreshRun();
      }
      if (view.lineage.includes(event.run_id) || (event.kind === "forked" && view.lineage.includes(event.source_run_id))) refreshLineage();
    },
    onResync: (why) => { notify(`Re-read this run: ${why}.`, "warn"); refreshAll(); },
  });
}

function exportButton(wf, run, forks, text) {
  return h("button", {
    type: "button",
    onclick: async () => {
      try {
        await download("export", { workflow: wf, run, forks }, `${run.replace(/[^\w.-]/g, "_").slice(0, 80)}.jsonl`);
      } catch (error) { notify(`Export refused: ${error.message}`, "error", { sticky: true }); }
    },
  }, text);
}

function drawSummary(summary, alerts, wf, run, s, view, refresh) {
  const facts = [
    ["Step", s.super_step ?? "-"],
    ["Label", h("code", {}, safe(s.label || "-"))],
    ["Updated", when(s.updated_at_ms)],
    ["Worker", s.lease ? h("span", {}, h("code", {}, safe(s.lease.owner)), h("span.muted", {}, " · lease ends "), when(s.lease.expires_at_ms), h("span.muted", {}, ` · token ${s.lease.token}`))
      : h("span.muted", {}, { completed: "none (finished)", paused: "none (waiting for an answer)", failed: "none (the layer failed)" }[s.state] || "none holds this run")],
  ];
  const origin = view.origin;
  if (origin && origin.parent) {
    facts.push(["Forked from", h("a", { href: link("/run", { workflow: wf, run: origin.parent, step: origin.from_step }) },
      safe(shortRun(origin.parent)), ` @ step ${origin.from_step}`)]);
  }
  const actions = h("div.actions",
    {},
    info.writes ? exportButton(wf, run, false, "Export") : null,
    info.writes ? exportButton(wf, run, true, "Export with forks") : null,
    info.writes ? h("button.danger", {
      type: "button",
      onclick: async () => {
        if (!confirm(`Delete run ${run} and every checkpoint of it? Its forks stay.`)) return;
        try {
          await post("delete", { workflow: wf, run });
          location.href = link("/workflow", { workflow: wf });
        } catch (error) { notify(`Delete refused: ${error.message}`, "error", { sticky: true }); }
      },
    }, "Delete run") : null);
  fill(summary,
    h("div.summary-head", {}, h("h1.mono.run-id", {}, safe(run)), badge(s.state), s.fork ? h("span.tag", {}, "fork") : null),
    s.detail && !s.pause && !s.last_error ? h("p.detail-line", {}, safe(s.detail)) : null,
    h("dl.facts", {}, facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    actions);
  const pause = !s.pause || s.state === "completed" ? null :
    s.state === "paused" ? pauseCard(wf, run, s.pause, refresh) : answeredCard(s);
  fill(alerts, pause, s.last_error ? errorCard(s.last_error) : null);
}

function pauseCard(wf, run, pause, refresh) {
  const payload = h("pre.payload", {}, safe(JSON.stringify(pause.payload, null, 2), { keepNewlines: true }));
  let form = null;
  if (!info.writes) {
    form = h("p.muted.small", {}, "Answering needs an inspector started with --allow-writes.");
  } else if (!info.can_answer) {
    form = h("p.muted.small", {}, "This inspector cannot resume runs: it has no workflow to run them with (see the README, \u201cAnswering a pause\u201d).");
  } else {
    const area = h("textarea", { id: "answer-value", rows: 3, spellcheck: "false", placeholder: '{"approved": true}' });
    const result = h("div.answer-result", { role: "status" });
    form = h("form.answer", {
      onsubmit: async (e) => {
        e.preventDefault();
        let value;
        try { value = area.value.trim() === "" ? null : JSON.parse(area.value); } catch (error) { fill(result, h("p.error-text", {}, `Not JSON: ${error.message}`)); return; }
        const button = form.querySelector("button");
        button.disabled = true;
        fill(result, h("p.muted", {}, "Resuming…"));
        try {
          const done = await post("answer", { workflow: wf, run, value });
          fill(result, h("p.ok-text", {}, `Answered: the run is now ${done.state}.`));
          notify(`Answered the pause of ${run}: the run is now ${done.state}.`, "info", { sticky: true });
          refresh();
        } catch (error) {
          fill(result, h("p.error-text", {}, `Refused: ${safe(error.message)}`));
          button.disabled = false;
        }
      },
    }, h("label", { for: "answer-value" }, "Answer (JSON, the step's resume value)"), area,
      h("div.actions", {}, h("button.primary", { type: "submit" }, "Answer and resume")), result);
  }
  return h("section.card.card-pause", { "aria-labelledby": "pause-h" },
    h("h2", { id: "pause-h" }, "Waiting for an answer"),
    h("p", {}, "Paused ", { before: "before", inside: "inside", after: "after" }[pause.kind] || pause.kind, " step ",
      h("code", {}, safe(pause.step)), ` (layer ${pause.layer}).`),
    h("div.pause-body", {}, h("div", {}, h("div.small.muted", {}, "Payload"), payload), h("div", {}, form)));
}

function answeredCard(s) {
  return h("section.card.card-answered", { "aria-labelledby": "pause-h" },
    h("h2", { id: "pause-h" }, "Answered"),
    h("p", {}, "The pause at step ", h("code", {}, safe(s.pause.step)), " has an answer; the run is ",
      badge(s.state), s.state === "queued" ? " until a fleet worker resumes it with that answer." : "."),
    h("div.small.muted", {}, "Payload"),
    h("pre.payload", {}, safe(JSON.stringify(s.pause.payload, null, 2), { keepNewlines: true })));
}

function errorCard(error) {
  return h("section.card.card-error", { "aria-labelledby": "err-h" },
    h("h2", { id: "err-h" }, "Last error"),
    h("p", {}, h("code", {}, safe(error.step)), " failed with ", h("strong", {}, safe(error.error_type)),
      ` after ${error.attempts} attempt${error.attempts === 1 ? "" : "s"}, at step ${error.super_step}, `, when(error.at_ms), "."),
    h("pre.payload", {}, safe(error.message, { keepNewlines: true })));
}

function forkNode(wf, id, byId, states) {
  const node = byId.get(id);
  const label = node.parent || node.from_step !== null ? shortRun(id) : id;
  const content = node.exists ?
    h("a", { href: link("/run", { workflow: wf, run: id }), title: safe(id), "aria-current": node.current ? "page" : null }, safe(label)) :
    h("span.muted", { title: safe(id) }, safe(label), " (deleted)");
  const state = states[id];
  return h(`li${node.current ? ".current" : ""}`, {},
    h("div.fork-node", {}, content, state ? badge(state.state) : null,
      node.from_step !== null ? h("span.muted.small", {}, `from step ${node.from_step}`) : null),
    node.children.length ? h("ul", {}, node.children.map((child) => forkNode(wf, child, byId, states))) : null);
}

function diffView(d) {
  const head = h("p.diff-head", {},
    h("code", {}, safe(shortRun(d.from.run_id)), `@${d.from.super_step}`), " → ",
    h("code", {}, safe(shortRun(d.to.run_id)), `@${d.to.super_step}`), ": ",
    h("strong", {}, `${d.changes.length} change${d.changes.length === 1 ? "" : "s"}`));
  if (!d.changes.length) return h("div", {}, head, h("p.muted", {}, "The two checkpoints hold the same channels."));
  const marks = { added: "+", appended: "+", removed: "−", changed: "~" };
  return h("div", {}, head, h("ul.changes", {}, d.changes.map((c) => h(`li.change.change-${c.kind}`, {},
    h("div.change-head", {}, h("span.mark", { "aria-hidden": "true" }, marks[c.kind] || "~"), h("span.kind", {}, c.kind), h("code.path", {}, safe(pathText(c.path)))),
    c.string ? stringDiff(c.string) :
      c.kind === "changed" ? h("div.values", {}, h("del", {}, compact(c.old)), h("ins", {}, compact(c.new))) :
        c.kind === "removed" ? h("div.values", {}, h("del", {}, compact(c.old))) :
          h("div.values", {}, h("ins", {}, compact(c.new)))))));
}

function stringDiff(s) {
  const cut = (n) => (n ? h("span.muted", {}, ` … ${n.toLocaleString()} more`) : null);
  return h("div.values.string-diff", {},
    h("div.small.muted", {}, `strings of ${s.old_length.toLocaleString()} → ${s.new_length.toLocaleString()} characters differ from character ${s.start.toLocaleString()}`),
    h("pre.sdiff", {},
      s.start > s.before.length ? "…" : "", safe(s.before, { keepNewlines: true }),
      h("del", {}, safe(s.old, { keepNewlines: true }), cut(s.old_cut)),
      h("ins", {}, safe(s.new, { keepNewlines: true }), cut(s.new_cut)),
      safe(s.after, { keepNewlines: true }), s.old_stop + s.after.length < s.old_length ? "…" : ""));
}

// ---- start ---------------------------------------------------------------------------------

async function boot() {
  takeTokenFromAddress();
  try {
    info = await get("info");
  } catch (error) {
    fill(main, errorBox(error));
    return;
  }
  setTones(info.tones);
  document.getElementById("store").textContent = info.store ? safe(info.store) : "";
  writesControl();
  tickTimes();
  const page = location.pathname;
  try {
    if (page === "/workflow") await workflowPage();
    else if (page === "/run") await runPage();
    else await workflowsPage();
  } catch (error) {
    fill(main, errorBox(error));
  }
}

boot();
