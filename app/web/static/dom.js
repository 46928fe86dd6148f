// Small DOM helpers. Text always goes in as text (file names and findings come from untrusted files).

// h("tr", {class: "x"}, "text", child, [more]) → an element; attributes starting with "on" are listeners.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

const errorBox = () => document.getElementById("error");

// An API refusal (or any error) shown to the user, with its problem `detail`.
export function showError(error) {
  const box = errorBox();
  const problem = error.problem || { title: "Error", detail: error.message };
  const title = problem.title || "Error";
  const detail = problem.detail && problem.detail !== title ? problem.detail : "";
  replace(box, h("strong", {}, title), detail ? ": " : "", detail);
  box.hidden = false;
}

export function clearError() {
  const box = errorBox();
  box.hidden = true;
  box.replaceChildren();
}

// Runs an async action, showing what it throws instead of leaving it unhandled.
export async function guarded(action) {
  try {
    clearError();
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}
