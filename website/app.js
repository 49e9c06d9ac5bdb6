// The page finds its API in config.json, written next to it when the site is deployed
// (locally, `sentiment-mlops api` serves it), so no address is ever pasted into the HTML.
"use strict";

const MAX_CHARS = 50000;
const form = document.getElementById("review-form");
const review = document.getElementById("review");
const submit = document.getElementById("submit");
const count = document.getElementById("count");
const result = document.getElementById("result");
const label = document.getElementById("label");
const confidence = document.getElementById("confidence");
const error = document.getElementById("error");
const feedback = document.getElementById("feedback");
const feedbackStatus = document.getElementById("feedback-status");
const verdictButtons = [document.getElementById("feedback-right"), document.getElementById("feedback-wrong")];
let apiUrl = null;
let answered = null; // the answer on show, for its feedback: {inference_id, label, token}

function showError(message) {
  result.hidden = true;
  error.textContent = message;
  error.hidden = false;
}

function showPrediction(prediction, answer) {
  error.hidden = true;
  label.textContent = prediction.label === "positive" ? "Positive" : "Negative";
  label.className = "label " + prediction.label;
  confidence.textContent = "(" + Math.round(prediction.score * 100) + "% sure)";
  // The API signs an answer it will take feedback on; without the signature there are no buttons.
  answered = answer.feedback_token ? {inference_id: answer.inference_id, label: prediction.label,
                                      token: answer.feedback_token} : null;
  feedback.hidden = !answered;
  feedbackStatus.textContent = "";
  verdictButtons.forEach((button) => { button.disabled = false; });
  result.hidden = false;
}

async function sendFeedback(verdict) {
  if (!answered) {
    return;
  }
  verdictButtons.forEach((button) => { button.disabled = true; });
  feedbackStatus.textContent = "Sending…";
  try {
    const response = await fetch(apiUrl + "/feedback", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({inference_id: answered.inference_id, label: answered.label, verdict: verdict,
                            token: answered.token}),
    });
    const reply = await response.json().catch(() => ({}));
    if (response.ok) {
      feedbackStatus.textContent = "Thank you: noted as " + reply.label + ".";
    } else {
      feedbackStatus.textContent = reply.error || "The feedback was not recorded (" + response.status + ").";
      verdictButtons.forEach((button) => { button.disabled = response.status === 403; });
    }
  } catch (failure) {
    feedbackStatus.textContent = "The feedback could not be sent; try again.";
    verdictButtons.forEach((button) => { button.disabled = false; });
  }
}

verdictButtons.forEach((button) => {
  button.addEventListener("click", () => sendFeedback(button.dataset.verdict));
});

function ready(isReady) {
  submit.disabled = !isReady;
  submit.textContent = isReady ? "Check the sentiment" : "Checking…";
}

// Locally, `sentiment-mlops api` also serves the model registry page and names it in config.json;
// the site published on AWS has no registry page, and its config.json names none.
function showRegistryLink(url) {
  const text = typeof url === "string" ? url : "";
  if (!/^(\/(?!\/)|https?:\/\/)/.test(text)) {
    return; // only a path on this site or an http(s) address, never a javascript: URL
  }
  document.getElementById("registry").href = text;
  document.getElementById("registry-link").hidden = false;
}

review.addEventListener("input", () => {
  count.textContent = review.value.length.toLocaleString("en") + " / 50,000 characters";
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = review.value.trim();
  if (!text) {
    showError("Write or paste a review first.");
    return;
  }
  if (text.length > MAX_CHARS) {
    showError("That review is longer than 50,000 characters; shorten it.");
    return;
  }
  ready(false);
  try {
    const response = await fetch(apiUrl + "/predict", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({review: text}),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      showError(answer.error || "The service answered " + response.status + "; try again later.");
    } else if (!answer.predictions || !answer.predictions.length) {
      showError("The service gave no prediction; try again later.");
    } else {
      showPrediction(answer.predictions[0], answer);
    }
  } catch (failure) {
    showError("The service cannot be reached; check your connection and try again.");
  } finally {
    ready(true);
  }
});

fetch("config.json")
  .then((response) => response.json())
  .then((config) => {
    apiUrl = String(config.apiUrl || "").replace(/\/$/, "");
    showRegistryLink(config.registryUrl);
    ready(true);
  })
  .catch(() => showError("This page has no config.json saying where its API is; deploy the site with it."));
