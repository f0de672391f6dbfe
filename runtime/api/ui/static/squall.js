// Squall's UI: the live parts. Pages work without it; it keeps them
// current. Everything it inserts is HTML the server rendered and escaped.

const STREAM = "/ui/stream?events=st2.execution__create,st2.execution__update";

/** Call `fn` at most once per `ms`, after the last call. */
function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

async function fetchText(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.text();
}

/** The history's first page: new executions and status changes appear. */
function liveRows(table) {
  const body = table.querySelector("tbody");
  const url = new URL(location.href);
  url.searchParams.set("partial", "rows");
  const refresh = debounce(async () => {
    // Expanded workflows stay expanded: their rows are fetched again.
    const open = [...body.querySelectorAll("button.expand[aria-expanded=true]")].map(
      (b) => b.dataset.tasks,
    );
    body.innerHTML = await fetchText(url);
    for (const tasks of open) {
      const button = body.querySelector(`button.expand[data-tasks="${CSS.escape(tasks)}"]`);
      if (button) await toggleTasks(button);
    }
    table.dispatchEvent(new CustomEvent("squall:refreshed", { bubbles: true }));
  }, 300);
  const events = new EventSource(STREAM);
  events.addEventListener("st2.execution__create", refresh);
  events.addEventListener("st2.execution__update", refresh);
  events.addEventListener("open", () => table.setAttribute("data-connected", "true"));
}

/** A workflow's row: its tasks shown beneath it, or hidden again. */
async function toggleTasks(button) {
  const row = button.closest("tr");
  const expanded = button.getAttribute("aria-expanded") === "true";
  for (const task of document.querySelectorAll(`tr[data-task-of="${row.dataset.id}"]`)) {
    task.remove();
  }
  if (expanded) {
    button.setAttribute("aria-expanded", "false");
    return;
  }
  const template = document.createElement("template");
  template.innerHTML = await fetchText(button.dataset.tasks);
  const rows = [...template.content.querySelectorAll("tr")];
  for (const task of rows) task.dataset.taskOf = row.dataset.id;
  row.after(...rows);
  button.setAttribute("aria-expanded", "true");
}

/** One execution while it runs: its status, then its output, kept current. */
function liveExecution(status) {
  const id = status.dataset.liveStatus;
  const events = new EventSource(STREAM);
  events.addEventListener("st2.execution__update", (event) => {
    const execution = JSON.parse(event.data);
    if (execution.id !== id) return;
    if (execution.status !== status.textContent) {
      // The page shows the result and the buttons that now apply.
      events.close();
      location.reload();
    }
  });
  const output = document.querySelector("[data-live-output]");
  if (!output) return;
  // Each read of the output also says the status: a change the stream
  // told before this page listened is seen here.
  const tail = async () => {
    for (const pre of output.querySelectorAll("pre[data-stream]")) {
      const url = `${output.dataset.liveOutput}?output_type=${pre.dataset.stream}`;
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) return;
      const now = response.headers.get("X-Execution-Status");
      if (now && now !== status.textContent) {
        events.close();
        location.reload();
        return;
      }
      const text = await response.text();
      if (pre.textContent !== text) {
        pre.textContent = text;
        pre.scrollTop = pre.scrollHeight;
      }
    }
  };
  tail().catch(() => {});
  setInterval(() => tail().catch(() => {}), 1000);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.expand");
  if (button) toggleTasks(button).catch((e) => console.error(e));
});

const table = document.querySelector("table[data-live=rows]");
if (table) liveRows(table);
const status = document.querySelector("[data-live-status]");
if (status && document.querySelector("[data-live-output]")) liveExecution(status);

/** A sensor's page: its log and state, kept current. */
const sensorLog = document.querySelector("[data-live-log]");
if (sensorLog) {
  setInterval(async () => {
    try {
      const text = await fetchText(sensorLog.dataset.liveLog);
      const box = document.createElement("template");
      box.innerHTML = text;
      if (sensorLog.textContent !== box.content.textContent) {
        sensorLog.textContent = box.content.textContent;
        sensorLog.scrollTop = sensorLog.scrollHeight;
      }
    } catch (e) {
      console.error(e);
    }
  }, 2000);
}
