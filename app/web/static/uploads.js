// Files straight to S3 (POST /uploads): which files go there, their presigned PUTs with
// XMLHttpRequest (whose upload.onprogress feeds a bar per file), a multipart upload's parts
// sliced from the File a few at once with each answer's ETag kept (the bucket's CORS rule
// exposes it), and the complete calls. The API never sees these bytes.
import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";

// Above this a file goes straight to S3: under the API's default MAX_FILE_BYTES (5 MiB) for inline files.
export const UPLOAD_THRESHOLD = 4 * 1024 * 1024;
const PUTS_AT_ONCE = 3; // a multipart upload's parts, or several files' single PUTs

export function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes / 1024;
  for (const unit of ["KiB", "MiB"]) {
    if (value < 1024) return `${value.toFixed(1)} ${unit}`;
    value /= 1024;
  }
  return `${value.toFixed(1)} GiB`;
}

// ---- which files go straight to S3 ----

// {inline, uploaded}, each in the order given: a file goes to S3 above the threshold or the service's
// per-file limit; then, while the inline files add up to more than its per-request limit, the largest.
// `limits` ({file_bytes, request_bytes}) are what the service's 413s have named so far.
export function planFiles(files, limits = {}) {
  const perFile = Math.min(UPLOAD_THRESHOLD, limits.file_bytes ?? Infinity);
  const inline = new Set(files.filter((f) => f.size <= perFile));
  if (limits.request_bytes !== undefined) {
    let total = [...inline].reduce((sum, f) => sum + f.size, 0);
    for (const largest of [...inline].sort((a, b) => b.size - a.size)) {
      if (total <= limits.request_bytes) break;
      inline.delete(largest);
      total -= largest.size;
    }
  }
  return { inline: files.filter((f) => inline.has(f)), uploaded: files.filter((f) => !inline.has(f)) };
}

// The limits with the one a 413 names (`limit`, `limit_value`), or null when it names no inline limit.
export function learnedLimits(limits, error) {
  const problem = (error instanceof ApiError && error.status === 413 && error.problem) || {};
  if (problem.limit === "max_file_bytes") return { ...limits, file_bytes: problem.limit_value };
  if (problem.limit === "max_request_bytes") return { ...limits, request_bytes: problem.limit_value };
  return null;
}

// ---- the transfer ----

// S3's error as `<status> <Code>: <Message>` (its body is XML), or the status alone.
function storageDetail(xhr) {
  const text = xhr.responseText || "";
  const code = /<Code>([^<]*)<\/Code>/.exec(text);
  const message = /<Message>([^<]*)<\/Message>/.exec(text);
  return code ? `${xhr.status} ${code[1]}${message ? `: ${message[1]}` : ""}` : `HTTP ${xhr.status}`;
}

// PUT `body` to a presigned URL with the headers it was signed with (never the API key); the
// answer's ETag. `onProgress(loaded)` as the bytes go.
function put(url, headers, body, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded));
    xhr.addEventListener("load", () => {
      // Only headers the bucket's CORS rule exposes are listed (asking for another logs an error).
      if (xhr.status >= 200 && xhr.status < 300) resolve(/^etag:\s*(.*?)\s*$/im.exec(xhr.getAllResponseHeaders())?.[1] || "");
      else reject(new ApiError(xhr.status, { title: "Upload refused by the storage", detail: storageDetail(xhr) }));
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, { title: "Upload failed", detail: "The storage could not be reached, or refused this page's origin (its CORS rule)." })),
    );
    xhr.addEventListener("abort", () => reject(new DOMException("The upload was stopped.", "AbortError")));
    if (signal.aborted) {
      reject(new DOMException("The upload was stopped.", "AbortError"));
      return;
    }
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(body);
  });
}

// `work(item)` for each item, at most `limit` at once; the first failure stops the rest (via `stop`).
async function atOnce(items, limit, work, stop) {
  let next = 0;
  const worker = async () => {
    while (next < items.length && !stop.signal.aborted) await work(items[next++]);
  };
  try {
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  } catch (error) {
    stop.abort();
    throw error;
  }
}

// The PUTs a ticket (an item of POST /uploads' answer) asks for: the whole file, or each part's slice.
function piecesOf(index, ticket, file) {
  if (ticket.kind === "single") return [{ index, number: null, url: ticket.url, headers: ticket.headers, blob: file }];
  let offset = 0;
  return ticket.parts.map((part) => {
    const blob = file.slice(offset, offset + part.size);
    offset += part.size;
    return { index, number: part.number, url: part.url, headers: {}, blob };
  });
}

// Upload `files` straight to S3 (declared, PUT, completed); their upload ids, in order.
// `progress.sent(index, bytes)` as bytes go, `progress.done(index, ticket)` once complete.
export async function uploadFiles(api, files, progress, signal) {
  const declared = files.map((f) => ({ name: f.name, size: f.size }));
  const { uploads } = await api.json("POST", "/uploads", { json: { files: declared } });
  const pieces = uploads.flatMap((ticket, index) => piecesOf(index, ticket, files[index]));
  const loaded = new Map(); // piece → bytes sent
  const stop = new AbortController();
  signal.addEventListener("abort", () => stop.abort(), { once: true });
  const send = async (piece) => {
    const onProgress = (bytes) => {
      loaded.set(piece, bytes);
      const sent = pieces.filter((p) => p.index === piece.index).reduce((sum, p) => sum + (loaded.get(p) || 0), 0);
      progress.sent(piece.index, sent);
    };
    piece.etag = await put(piece.url, piece.headers, piece.blob, onProgress, stop.signal);
    onProgress(piece.blob.size);
    if (piece.number !== null && !piece.etag) {
      throw new Error(
        `The storage's answer to part ${piece.number} of ${files[piece.index].name} shows no ETag: the bucket's CORS rule must expose it (Terraform's api_origin sets that rule).`,
      );
    }
  };
  await atOnce(pieces, PUTS_AT_ONCE, send, stop);
  for (const [index, ticket] of uploads.entries()) {
    const parts = pieces.filter((p) => p.index === index && p.number !== null).map((p) => ({ number: p.number, etag: p.etag }));
    // A single PUT is checked at once (its size); a multipart upload's parts are joined.
    await api.json("POST", `/uploads/${encodeURIComponent(ticket.upload_id)}/complete`, parts.length ? { json: { parts } } : {});
    progress.done(index, ticket);
  }
  return uploads.map((t) => t.upload_id);
}

// ---- what is shown: a bar per file going straight to S3 ----

export class UploadList {
  constructor(element) {
    this.element = element;
  }

  // A row per file, its bar at 0.
  start(files) {
    this.files = files;
    this.rows = files.map((file) => {
      const bar = h("progress", { max: file.size, value: 0, "aria-label": `${file.name} uploaded` });
      const text = h("span", { class: "muted" }, `0 B of ${sizeText(file.size)}`);
      const state = h("span", { class: "state running" }, "uploading");
      return { bar, text, state, row: h("li", { "data-upload": file.name }, h("strong", {}, file.name), " ", bar, " ", text, " ", state) };
    });
    replace(this.element, h("p", {}, "Uploading straight to storage:"), h("ul", { class: "uploads" }, this.rows.map((r) => r.row)));
    this.element.hidden = false;
  }

  sent(index, bytes) {
    const { bar, text } = this.rows[index];
    bar.value = bytes;
    text.textContent = `${sizeText(bytes)} of ${sizeText(this.files[index].size)}`;
  }

  done(index, ticket) {
    const { row, state } = this.rows[index];
    state.className = "state pass";
    state.textContent = ticket.kind === "multipart" ? `uploaded (${ticket.parts.length} parts)` : "uploaded";
    row.dataset.uploadId = ticket.upload_id;
  }

  hide() {
    this.element.hidden = true;
    this.element.replaceChildren();
  }
}
