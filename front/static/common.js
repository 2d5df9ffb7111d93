// Helpers shared by the pages: JSON API calls and error display.
"use strict";

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The token that the front sets in the csrf cookie. The front rejects every
// state-changing request that does not send it back in X-CSRF-Token.
function csrfToken() {
  const prefix = "csrf=";
  const entry = document.cookie.split("; ").find((item) => item.startsWith(prefix));
  return entry ? entry.slice(prefix.length) : "";
}

// Send a JSON request and return the decoded body. Throw ApiError on 4xx/5xx.
async function callApi(method, path, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (method !== "GET" && method !== "HEAD") {
    options.headers["X-CSRF-Token"] = csrfToken();
  }
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(
      response.status,
      error.code || "UNKNOWN",
      error.message || `request failed with HTTP ${response.status}`,
    );
  }
  return data;
}

function showError(message) {
  const element = document.getElementById("error");
  if (!element) return;
  element.textContent = message;
  element.hidden = !message;
}

// 32 random hex digits, for idempotency keys. crypto.randomUUID needs a
// secure context, and this page may be served over plain HTTP.
function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "unknown";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
