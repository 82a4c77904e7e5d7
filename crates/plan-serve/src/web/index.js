// The runs page: the form that starts a run.
document.getElementById('start').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.target;
  const body = { goal: f.goal.value };
  if (f.strategy.value) body.strategy = f.strategy.value;
  if (f.approve.checked) body.approve = true;
  const r = await fetch('/api/runs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const v = await r.json();
  if (r.ok) location.href = '/runs/' + v.run_id; else document.getElementById('error').textContent = v.error;
});
