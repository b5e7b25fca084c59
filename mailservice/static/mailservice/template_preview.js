/*
 * The live preview on a template's admin page (mailservice/template_admin.py, docs/templates.md,
 * "The admin"). A pause of DELAY_MS in typing posts the form's unsaved subject, text and html with
 * the sample data to the admin's preview view, which renders them as a message would be and
 * writes nothing; its answer fills the preview, or lists the errors with the last good preview
 * dimmed. An answer that arrives after a newer request was sent is dropped.
 *
 * The HTML part goes into the page's sandboxed iframe (its `sandbox` attribute allows nothing:
 * no scripts, an opaque origin), through `srcdoc`; everything else is set as text, never as HTML.
 * The sample data is never posted with the form: it is kept in sessionStorage, per template, so
 * it survives "Save and continue editing" and is gone when the tab is closed.
 */
"use strict";

(function () {
    const DELAY_MS = 300;
    const PARTS = ["subject", "text", "html"];
    const STORAGE_PREFIX = "mailservice.template-preview:";

    function fieldValue(form, name) {
        const field = form.elements.namedItem(name);
        return field && "value" in field ? field.value : "";
    }

    // The template's name and language: the page's own on a change page (where they cannot be
    // edited), else as typed so far; `pt_BR` and `pt-br` are the same key.
    function storageKey(pane, form) {
        const name = pane.dataset.name || fieldValue(form, "name");
        const language = pane.dataset.name ? pane.dataset.language : fieldValue(form, "language");
        return STORAGE_PREFIX + name.trim() + ":" + language.trim().toLowerCase().replace(/_/g, "-");
    }

    function remember(key, value) {
        try {
            window.sessionStorage.setItem(key, value);
        } catch (error) {
            // Storage refused (private mode, quota): the sample is simply not kept.
        }
    }

    function recall(key) {
        try {
            return window.sessionStorage.getItem(key);
        } catch (error) {
            return null;
        }
    }

    function start(pane) {
        const form = pane.closest("form");
        const sample = pane.querySelector("#template-preview-data");
        const status = pane.querySelector(".template-preview-status");
        const errors = pane.querySelector(".template-preview-errors");
        const subject = pane.querySelector(".template-preview-subject");
        const text = pane.querySelector(".template-preview-text");
        const frame = pane.querySelector(".template-preview-frame iframe");
        let timer = null;
        let controller = null;

        const kept = recall(storageKey(pane, form));
        if (kept !== null) {
            sample.value = kept;
        }

        function showErrors(list) {
            errors.replaceChildren(
                ...list.map((error) => {
                    const item = document.createElement("li");
                    item.textContent = (error.field ? error.field + ": " : "") + error.message;
                    return item;
                })
            );
            pane.classList.toggle("template-preview-stale", list.length > 0);
        }

        function show(answer) {
            if (answer.errors) {
                status.textContent = "Not rendered: the errors below say why.";
                showErrors(answer.errors);
                return;
            }
            showErrors([]);
            subject.textContent = answer.subject;
            text.textContent = answer.text;
            frame.srcdoc = answer.html;
            status.textContent = "Rendered with the sample data.";
        }

        async function refresh() {
            if (controller) {
                controller.abort();
            }
            controller = new AbortController();
            const body = new FormData();
            body.append("csrfmiddlewaretoken", fieldValue(form, "csrfmiddlewaretoken"));
            for (const part of PARTS) {
                body.append(part, fieldValue(form, part));
            }
            body.append("template_data", sample.value);
            status.textContent = "Rendering…";
            try {
                const response = await fetch(pane.dataset.url, {
                    method: "POST",
                    body: body,
                    credentials: "same-origin",
                    signal: controller.signal,
                });
                const type = response.headers.get("Content-Type") || "";
                if (!type.startsWith("application/json")) {
                    // A login page (the session ended) or a refusal (403: CSRF, permission).
                    throw new Error(
                        response.redirected ? "log in again, then reload this page" : "HTTP " + response.status
                    );
                }
                show(await response.json());
            } catch (error) {
                if (error.name !== "AbortError") {
                    status.textContent = "Preview unavailable: " + error.message + ".";
                }
            }
        }

        function schedule() {
            window.clearTimeout(timer);
            timer = window.setTimeout(refresh, DELAY_MS);
        }

        form.addEventListener("input", (event) => {
            if (event.target === sample) {
                remember(storageKey(pane, form), sample.value);
                schedule();
            } else if (PARTS.includes(event.target.name)) {
                schedule();
            }
        });
        // On the add page the key follows the name typed: keep the sample under the one saved.
        form.addEventListener("submit", () => remember(storageKey(pane, form), sample.value));
        refresh();
    }

    function startAll() {
        document.querySelectorAll("#template-preview").forEach(start);
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", startAll);
    } else {
        startAll();
    }
})();
