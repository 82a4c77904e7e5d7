// A run's page: the plan's versions (the first plan and each revision, from the events'
// `plan_created` and `replanned`), and, for the one selected, what changed against the
// version before it, marked on the DAG: steps added (`diff-added`), changed (`diff-changed`:
// description, kind or dependencies), removed (`diff-removed`, when the DAG still draws
// them) and not in that version (`diff-absent`; for the first version, the only mark),
// plus the same in words under the list. Picking the selected version again clears it.
'use strict';
const Versions = (() => {
  const versions = []; // {event, revision, reason, steps}
  let selected = null;
  const CLASSES = ['diff-added', 'diff-changed', 'diff-removed', 'diff-absent'];

  // What of a step a version compares, field by field.
  function fields(s) {
    return {
      description: s.description || '',
      kind: s.kind || 'action',
      dependencies: [...(s.dependencies || [])].sort().join('\n'),
    };
  }

  // The steps `after` adds, removes and changes against `before`.
  function diff(before, after) {
    const old = new Map(before.map(s => [s.id, s]));
    const now = new Set(after.map(s => s.id));
    const added = [], changed = [];
    for (const s of after) {
      const was = old.get(s.id);
      if (!was) { added.push(s.id); continue; }
      const [a, b] = [fields(was), fields(s)];
      const what = Object.keys(a).filter(k => a[k] !== b[k]);
      if (what.length) changed.push({ id: s.id, what });
    }
    const removed = before.filter(s => !now.has(s.id)).map(s => s.id);
    return { added, removed, changed };
  }

  function diffOf(i) {
    return i > 0 ? diff(versions[i - 1].steps, versions[i].steps) : null;
  }

  function render() {
    const list = document.getElementById('versions');
    if (!list) return;
    list.replaceChildren(...versions.map((v, i) => {
      const d = diffOf(i);
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.version = String(i);
      b.className = i === selected ? 'version selected' : 'version';
      b.textContent = `v${i} · ${v.event === 'replanned' ? 'replanned' : 'planned'} · ${v.steps.length} steps`
        + (d ? ` · +${d.added.length} −${d.removed.length} ~${d.changed.length}` : '');
      if (v.reason) b.title = v.reason;
      b.addEventListener('click', () => select(i));
      const li = document.createElement('li');
      li.append(b);
      return li;
    }));
  }

  function mark() {
    const words = document.getElementById('version-diff');
    const v = selected === null ? null : versions[selected];
    const d = selected === null ? null : diffOf(selected);
    const ids = new Set(v ? v.steps.map(s => s.id) : []);
    document.querySelectorAll('#dag .step').forEach(g => {
      g.classList.remove(...CLASSES);
      if (!v) return;
      const id = g.dataset.stepId;
      if (d && d.added.includes(id)) g.classList.add('diff-added');
      else if (d && d.changed.some(c => c.id === id)) g.classList.add('diff-changed');
      else if (d && d.removed.includes(id)) g.classList.add('diff-removed');
      else if (!ids.has(id)) g.classList.add('diff-absent');
    });
    if (!words) return;
    if (!v) { words.textContent = ''; return; }
    if (!d) { words.textContent = `v${selected} is the first plan: ${v.steps.length} steps.`; return; }
    const parts = [];
    if (d.added.length) parts.push(`added ${d.added.join(', ')}`);
    if (d.removed.length) parts.push(`removed ${d.removed.join(', ')}`);
    if (d.changed.length) parts.push(`changed ${d.changed.map(c => `${c.id} (${c.what.join(', ')})`).join(', ')}`);
    words.textContent = `v${selected} against v${selected - 1}: ${parts.length ? parts.join('; ') : 'no step changed'}.`
      + (v.reason ? ` Why: ${v.reason}` : '');
  }

  function select(i) {
    selected = selected === i ? null : i;
    render();
    mark();
  }

  return {
    // One event of the run, in journal order.
    apply(e) {
      if (e.event !== 'plan_created' && e.event !== 'replanned') return;
      versions.push({ event: e.event, revision: e.revision, reason: e.reason || null, steps: (e.plan && e.plan.steps) || [] });
      render();
      if (selected !== null) mark();
    },
  };
})();
