// A collapsible JSON tree drawn from the server's tree nodes (see ui/tree.py): containers are
// <details> elements (keyboard: Tab to a summary, Enter or Space to open), built only when
// opened, and a folded subtree or a cut string is fetched by its path when asked for.

import { h, safe, bytes } from "./dom.js";

/**
 * `fetchNode(path, {offset, full})` returns the node at `path` (a list of keys and indexes).
 * Returns the tree's root element.
 */
export function jsonTree(node, fetchNode, { path = [], depth = 0, label = null } = {}) {
  const root = h("div.tree");
  if (depth === 0 && label === null && node.t === "object" && node.items !== null) {
    // The top object (a snapshot's channels) is the tree itself: its keys are the first level.
    addItems(root, node, fetchNode, path, depth);
  } else {
    root.append(renderNode(node, fetchNode, path, depth, label));
  }
  return root;
}

function renderNode(node, fetchNode, path, depth, label) {
  const key = label === null ? null : h("span.key", {}, typeof label === "number" ? `${label}` : safe(label), ": ");
  if (node.t === "object" || node.t === "list") return container(node, fetchNode, path, depth, key);
  return h("div.leaf", {}, key, scalar(node, fetchNode, path));
}

function scalar(node, fetchNode, path) {
  if (node.t === "string") {
    const text = h("span.v-string", {}, safe(JSON.stringify(node.v)));
    if (!node.cut) return text;
    const more = h("button.more", {
      type: "button",
      onclick: async () => {
        more.disabled = true;
        more.textContent = "loading…";
        try {
          const full = await fetchNode(path, { full: true });
          text.textContent = safe(JSON.stringify(full.v));
          more.remove();
          note.remove();
        } catch (error) {
          more.textContent = `failed: ${error.message}`;
        }
      },
    }, "show all");
    const note = h("span.muted", {}, ` … ${node.cut.toLocaleString()} more characters of ${node.len.toLocaleString()} `);
    return h("span", {}, text, note, more);
  }
  if (node.t === "null") return h("span.v-null", {}, "null");
  if (node.t === "bool") return h("span.v-bool", {}, String(node.v));
  return h("span.v-number", {}, String(node.v));
}

function summaryText(node) {
  const open = node.t === "object" ? "{" : "[";
  const close = node.t === "object" ? "}" : "]";
  const n = node.n.toLocaleString();
  const count = node.t === "object" ? `${n} key${node.n === 1 ? "" : "s"}` : `${n} item${node.n === 1 ? "" : "s"}`;
  const size = node.bytes ? ` · ${bytes(node.bytes)}` : "";
  return [`${open}${node.n ? "…" : ""}${close}`, h("span.muted", {}, ` ${count}${size}`)];
}

function container(node, fetchNode, path, depth, key) {
  const details = h("details.node", { dataset: { path: JSON.stringify(path) } });
  const summary = h("summary", {}, key, summaryText(node));
  details.append(summary);
  if (node.n === 0) {
    details.classList.add("empty");
    return details;
  }
  const body = h("div.children");
  details.append(body);
  let current = node;
  let built = false;
  const build = async () => {
    if (built) return;
    built = true;
    if (current.items === null) {
      body.append(h("div.muted", { role: "status" }, "loading…"));
      try {
        current = await fetchNode(path, { offset: 0 });
      } catch (error) {
        body.replaceChildren(h("div.error-text", {}, `could not load: ${error.message}`));
        built = false;
        return;
      }
      body.replaceChildren();
    }
    addItems(body, current, fetchNode, path, depth);
  };
  details.addEventListener("toggle", () => { if (details.open) build(); });
  const small = node.items !== null && node.n <= 12;
  if (depth === 0 || (depth <= 2 && small)) {
    details.open = true;
    build();
  }
  return details;
}

function addItems(body, node, fetchNode, path, depth) {
  for (const [k, child] of node.items) {
    body.append(renderNode(child, fetchNode, [...path, k], depth + 1, k));
  }
  if (node.next !== null && node.next !== undefined) {
    const more = h("button.more", {
      type: "button",
      onclick: async () => {
        more.disabled = true;
        more.textContent = "loading…";
        try {
          const page = await fetchNode(path, { offset: node.next });
          more.remove();
          addItems(body, page, fetchNode, path, depth);
        } catch (error) {
          more.disabled = false;
          more.textContent = `failed: ${error.message} (retry)`;
        }
      },
    }, `show ${Math.min(200, node.n - node.next)} more of ${(node.n - node.next).toLocaleString()} left`);
    body.append(more);
  }
}
