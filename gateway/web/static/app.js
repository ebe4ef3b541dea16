// The little the pages need beyond htmx: Ctrl-Enter in the SQL editor, and the upload form
// (its fields go into the /v1/ingest query string, the file is the only part of the body;
// a progress bar from htmx's upload progress events; then the job's progress fragment).
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && e.target.id === "q" && e.target.form) {
    e.preventDefault();
    htmx.trigger(e.target.form, "submit");
  }
});

document.addEventListener("change", (e) => {
  // A changed filter re-runs the search at once.
  if (e.target.matches && e.target.matches("[data-filter]") && e.target.form) {
    htmx.trigger(e.target.form, "submit");
  }
});

document.addEventListener("htmx:configRequest", (e) => {
  const form = e.detail.elt;
  if (form.id !== "upload") return;
  const p = e.detail.parameters;
  const query = new URLSearchParams({ name: p.get("name"), mode: p.get("mode"), wait: "0" });
  if (p.get("embed")) {
    query.set("embed_index", p.get("embed_index") || p.get("name"));
    query.set("id_column", p.get("id_column"));
    query.set("text_template", p.get("text_template"));
  }
  for (const key of Array.from(p.keys())) if (key !== "file") p.delete(key);
  e.detail.path = "/v1/ingest?" + query.toString();
  const bar = document.getElementById("upload-progress");
  bar.hidden = false;
  bar.value = 0;
  document.getElementById("upload-error").hidden = true;
  document.getElementById("job").innerHTML = "";
});

document.addEventListener("htmx:xhr:progress", (e) => {
  if (e.detail.elt.id !== "upload" || !e.detail.lengthComputable) return;
  const pct = Math.round((100 * e.detail.loaded) / e.detail.total);
  document.getElementById("upload-progress").value = pct;
  document.getElementById("upload-pct").textContent = "uploaded " + pct + "%";
});

document.addEventListener("htmx:afterRequest", (e) => {
  if (e.detail.elt.id !== "upload") return;
  const xhr = e.detail.xhr;
  let body = {};
  try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
  if (xhr.status >= 400 || !body.job_id) {
    const box = document.getElementById("upload-error");
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || "");
    box.textContent = "Upload failed: " + (body.error || xhr.status) + (detail ? ": " + detail : "");
    box.hidden = false;
    return;
  }
  htmx.ajax("GET", "/jobs/" + body.job_id, { target: "#job", swap: "innerHTML" });
});
