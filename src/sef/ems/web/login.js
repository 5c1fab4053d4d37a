/* SEF EMS dashboard login: POST /login with the token; the answer sets an HttpOnly,
 * SameSite=Strict session cookie (no script ever reads the token back), then the
 * dashboard opens. */
"use strict";

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const input = document.getElementById("token");
  const button = document.getElementById("login");
  button.disabled = true;
  try {
    const response = await fetch("login", {
      method: "POST",
      headers: { "content-type": "application/json", "x-sef-csrf": "1" },
      body: JSON.stringify({ token: input.value.trim() }),
      credentials: "same-origin",
    });
    if (response.ok) {
      input.value = "";
      window.location.replace("./");
      return;
    }
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch (_) {
      /* not JSON: keep the status */
    }
    error.textContent = message;
    error.hidden = false;
  } catch (exc) {
    error.textContent = `EMS unreachable: ${exc.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
