// A run's page: the live DAG, timeline (timeline.js) and plan versions (versions.js), a
// step's details on click, the summary, approval.
const runId = document.getElementById('run').dataset.runId;
let steps = JSON.parse(document.getElementById('steps').textContent);
const byId = () => Object.fromEntries(steps.map(s => [s.id, s]));
function show(id) {
  const s = byId()[id] || { id, status: 'pending', attempts: 0 };
  const lines = [`${s.id}: ${s.status}, ${s.attempts} attempt(s)`];
  if (s.duration_ms != null) lines.push(`took ${(s.duration_ms / 1000).toFixed(1)} s`);
  if (s.error) lines.push(`error: ${s.error}`);
  if (s.reused_from) lines.push(`reused from run ${s.reused_from}`);
  if (s.output) lines.push('', s.output);
  document.getElementById('details').textContent = lines.join('\n');
  // Re-run from here: a new run that runs this step and everything downstream of it
  // again, and reuses the rest.
  const actions = document.getElementById('step-actions');
  if (!actions) return;
  actions.replaceChildren();
  const b = document.createElement('button');
  b.id = 'rerun-from';
  b.dataset.step = s.id;
  b.textContent = 're-run from here';
  b.addEventListener('click', () => rerunFrom(s.id));
  actions.append(b);
}
async function rerunFrom(step) {
  const r = await fetch(`/api/runs/${runId}/rerun`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ from: [step] }) });
  const body = await r.json();
  if (r.ok) location.href = `/runs/${body.run_id}`;
  else document.getElementById('rerun-error').textContent = body.error;
}
document.querySelectorAll('.step').forEach(g => g.addEventListener('click', () => show(g.dataset.stepId)));
const reusedSteps = () => steps.filter(s => s.reused).map(s => s.id);
Timeline.onSelect(show);
Timeline.setReused(reusedSteps());
function mark(step, status) {
  const g = document.querySelector(`.step[data-step-id="${CSS.escape(step)}"]`);
  if (g) g.setAttribute('data-status', status);
}
async function refresh() {
  const r = await fetch(`/api/runs/${runId}`);
  if (!r.ok) return;
  const report = await r.json();
  steps = report.steps;
  Timeline.setReused(reusedSteps());
  for (const s of steps) mark(s.id, s.status);
  const st = document.getElementById('run-status');
  st.textContent = report.status; st.dataset.status = report.status; st.className = `status st-${report.status}`;
  const f = await fetch(`/runs/${runId}/summary`);
  if (f.ok) document.getElementById('summary').innerHTML = await f.text();
}
const live = new EventSource(`/api/runs/${runId}/events`);
live.onmessage = (m) => {
  const e = JSON.parse(m.data);
  Timeline.apply(e);
  Versions.apply(e);
  if (e.event === 'step_started') mark(e.step, 'running');
  else if (e.event === 'step_completed') mark(e.step, 'completed');
  else if (e.event === 'step_failed' && !e.retrying) mark(e.step, 'failed');
  else if (e.event === 'plan_created' || e.event === 'replanned') { if (!document.querySelector('.step')) location.reload(); }
  if (e.event === 'run_finished') { live.close(); refresh(); }
};
live.onerror = () => { live.close(); refresh(); };
async function answer(path, body) {
  const r = await fetch(`/api/runs/${runId}/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.ok) location.reload(); else document.getElementById('approval-error').textContent = (await r.json()).error;
}
const on = (id, f) => { const b = document.getElementById(id); if (b) b.addEventListener('click', f); };
on('approve', () => answer('approve', {}));
on('reject', () => answer('reject', {}));
on('approve-edited', () => {
  let plan; try { plan = JSON.parse(document.getElementById('plan-json').value); }
  catch (err) { document.getElementById('approval-error').textContent = 'not JSON: ' + err.message; return; }
  answer('approve', { plan });
});
// A replan waiting for approval is shown as what it changes against the plan before it,
// with the forecast of each (the first plan, with nothing to compare, is the whole plan).
async function approvalDiff() {
  const box = document.getElementById('approval-diff');
  if (!box) return;
  const r = await fetch(`/api/runs/${runId}/diff`);
  if (!r.ok) return;
  const d = await r.json();
  const ids = xs => xs.map(s => s.id || s).join(', ');
  const parts = [];
  if (d.added.length) parts.push(`added ${ids(d.added)}`);
  if (d.removed.length) parts.push(`removed ${ids(d.removed)}`);
  if (d.changed.length) parts.push(`changed ${d.changed.map(c => `${c.id} (${c.fields.join(', ')})`).join(', ')}`);
  if (d.kept.length) parts.push(`keeps the outputs of ${ids(d.kept)}`);
  if (d.invalidated.length) parts.push(`invalidates ${ids(d.invalidated)}`);
  const range = ([lo, hi]) => lo === hi ? `${lo}` : `${lo}-${hi}`;
  const tokens = f => [f.prompt_tokens[0] + f.completion_tokens[0], f.prompt_tokens[1] + f.completion_tokens[1]];
  const secs = ([lo, hi]) => `${(lo / 1000).toFixed(1)}-${(hi / 1000).toFixed(1)} s`;
  const usd = f => f.usd ? `$${f.usd[0].toFixed(4)}-${f.usd[1].toFixed(4)}` : 'cost unknown';
  const [a, b] = [d.forecast.before, d.forecast.after];
  box.textContent = `This plan (v${d.to.version}) against v${d.from.version}: ${parts.length ? parts.join('; ') : 'no step changed'}.`
    + (d.to.reason ? ` Why: ${d.to.reason}.` : '')
    + ` Forecast: calls ${range(a.calls)} → ${range(b.calls)}, tokens ${range(tokens(a))} → ${range(tokens(b))},`
    + ` time ${secs(a.wall_ms)} → ${secs(b.wall_ms)}, ${usd(a)} → ${usd(b)}.`;
}
approvalDiff();

