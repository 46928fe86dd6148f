// The API, called with the key held in memory only (a private field): never in web storage or a cookie.

export class ApiError extends Error {
  // A refusal: the problem+json body (RFC 9457) when there is one, else a stand-in with the same members.
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export class Api {
  #key = null;

  signIn(key) {
    this.#key = key;
  }

  signOut() {
    this.#key = null;
  }

  get signedIn() {
    return this.#key !== null;
  }

  // The answer of a request with the key; an ApiError for anything but 2xx.
  async fetch(method, path, { json, form } = {}) {
    const headers = { Authorization: `Bearer ${this.#key}` };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form; // FormData: the browser sets the multipart boundary
    }
    let answer;
    try {
      answer = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit" });
    } catch (error) {
      throw new ApiError(0, { title: "Network error", detail: `The service could not be reached (${error.message}).` });
    }
    if (!answer.ok) {
      let problem = { title: answer.statusText, detail: `HTTP ${answer.status}` };
      try {
        problem = await answer.json();
      } catch {
        // not JSON: keep the stand-in
      }
      throw new ApiError(answer.status, problem);
    }
    return answer;
  }

  async json(method, path, options) {
    const answer = await this.fetch(method, path, options);
    return answer.status === 204 ? null : answer.json();
  }

  get(path) {
    return this.json("GET", path);
  }

  // Every page of a paged list (`items`, `next_cursor`).
  async all(path) {
    const items = [];
    let cursor = null;
    do {
      const separator = path.includes("?") ? "&" : "?";
      const page = await this.get(cursor ? `${path}${separator}cursor=${encodeURIComponent(cursor)}` : path);
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor);
    return items;
  }

  // A download that needs the Authorization header: fetched, then saved from a Blob.
  async download(path, filename) {
    const answer = await this.fetch("GET", path);
    const url = URL.createObjectURL(await answer.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }
}
