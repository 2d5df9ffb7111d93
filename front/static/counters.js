// The counters page: a shared counter, a personal one after login, and the
// login and sign-up forms. Values arrive live over server-sent events.
"use strict";

const HISTORY_LENGTH = 8;

class CounterCard {
  constructor(root, name) {
    this.root = root;
    this.name = name;
    this.value = root.querySelector(".value");
    this.button = root.querySelector(".increment");
    this.servedBy = root.querySelector(".served .instance");
    this.streamState = root.querySelector(".stream-state");
    this.history = root.querySelector(".history");
    this.live = false;
    this.source = null;
    this.onClick = () => this.increment();
    this.button.addEventListener("click", this.onClick);
  }

  // Follow the counter's value. EventSource reconnects on its own.
  watch() {
    const path = `/api/counters/${encodeURIComponent(this.name)}/events`;
    this.source = new EventSource(path);
    this.source.addEventListener("open", () => this.setStream(true, "connected"));
    this.source.addEventListener("value", (event) => {
      this.setStream(true, "connected");
      this.value.textContent = JSON.parse(event.data).value;
    });
    this.source.addEventListener("unavailable", (event) => {
      const data = JSON.parse(event.data);
      this.setStream(false, `backend unavailable, retrying in ${data.retry_in} s`);
    });
    this.source.addEventListener("error", () => this.setStream(false, "reconnecting…"));
  }

  setStream(live, text) {
    this.live = live;
    this.streamState.textContent = text;
    this.root.classList.toggle("stale", !live);
  }

  async increment() {
    this.button.disabled = true;
    try {
      const body = { delta: 1, request_id: randomId() };
      const path = `/api/counters/${encodeURIComponent(this.name)}/increment`;
      const reply = await callApi("POST", path, body);
      showError("");
      // While the stream is live it delivers this value too, in order with
      // other browsers' clicks, so the reply only fills in when it is not.
      if (!this.live) this.value.textContent = reply.counter.value;
      this.servedBy.textContent = reply.instance || "unknown";
      this.record(reply);
    } catch (error) {
      showError(`Increment of ${this.name} failed: ${error.message}`);
    } finally {
      this.button.disabled = false;
    }
  }

  record(reply) {
    const item = document.createElement("li");
    item.textContent = `${reply.counter.value} (served by ${reply.instance || "unknown"})`;
    this.history.prepend(item);
    while (this.history.children.length > HISTORY_LENGTH) {
      this.history.lastElementChild.remove();
    }
  }

  close() {
    if (this.source) this.source.close();
    this.button.removeEventListener("click", this.onClick);
    this.history.replaceChildren();
    this.value.textContent = "–";
    this.servedBy.textContent = "–";
  }
}

let personalCard = null;

function showSession(session) {
  const loggedIn = session !== null;
  document.getElementById("logged-in").hidden = !loggedIn;
  document.getElementById("logged-out").hidden = loggedIn;
  const personal = document.getElementById("personal");
  personal.hidden = !loggedIn;
  if (personalCard) {
    personalCard.close();
    personalCard = null;
  }
  if (!loggedIn) return;
  document.getElementById("username").textContent = session.user.username;
  personal.querySelector(".counter-name").textContent = session.user.counter;
  personalCard = new CounterCard(personal, session.user.counter);
  personalCard.watch();
}

async function loadSession() {
  try {
    showSession(await callApi("GET", "/api/me"));
  } catch (error) {
    if (error.status !== 401) showError(`Could not load the session: ${error.message}`);
    showSession(null);
  }
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

async function logIn(username, password) {
  showSession(await callApi("POST", "/api/login", { username, password }));
  showError("");
}

function setUpForms() {
  const loginForm = document.getElementById("login-form");
  loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(loginForm);
    try {
      await logIn(values.username, values.password);
      loginForm.reset();
    } catch (error) {
      showError(`Login failed: ${error.message}`);
    }
  });

  const signupForm = document.getElementById("signup-form");
  signupForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(signupForm);
    try {
      await callApi("POST", "/api/users", values);
      await logIn(values.username, values.password);
      signupForm.reset();
    } catch (error) {
      showError(`Sign-up failed: ${error.message}`);
    }
  });

  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await callApi("POST", "/api/logout");
      showSession(null);
      showError("");
    } catch (error) {
      showError(`Logout failed: ${error.message}`);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const shared = document.getElementById("shared");
  new CounterCard(shared, shared.dataset.counter).watch();
  setUpForms();
  loadSession();
});
