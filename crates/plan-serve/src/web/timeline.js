// A run's page: the timeline beside the DAG. One bar per step attempt, from its start to
// its end, laid out from the run's events (the stream sends the stored ones first, then
// follows the live ones): retried attempts, fallbacks, the critical path and reused steps
// carry classes (`retried`, `fallback`, `critical`, `reused`) the styles colour.
//
// The critical path is computed here, from the events: the chain of dependencies of the
// latest plan whose steps' measured times (first attempt's start to last attempt's end,
// in the step's latest session) add up to the most, ties going to the chain that ends
// earliest in plan order, as plan-core's `critical_path_weighted` does.
'use strict';
const Timeline = (() => {
  const NS = 'http://www.w3.org/2000/svg';
  const attempts = []; // {step, attempt, start, end, outcome, fallback, session}, by arrival
  const open = new Map(); // step id -> its attempt that has not ended
  const fellBack = new Set(); // steps whose fallback body runs now
  const completed = new Set();
  const reusedByEvents = new Set();
  let reusedByReport = new Set();
  let plan = [];
  let origin = null;
  let last = null; // the newest event's time
  let lastSeen = 0; // when (page clock) it arrived
  let session = 0;
  let finished = false;
  let scheduled = false;
  let ticker = null;
  const listeners = [];

  function close(step, t, outcome) {
    const a = open.get(step);
    if (!a) return;
    a.end = t;
    a.outcome = outcome;
    open.delete(step);
  }

  function closeAll(t, outcome) {
    for (const step of [...open.keys()]) close(step, t, outcome);
  }

  // One event of the run, in journal order.
  function apply(e) {
    const t = Date.parse(e.ts);
    if (Number.isNaN(t)) return;
    if (origin === null) origin = t;
    switch (e.event) {
      case 'run_started':
        // A new session (a resume): what was in flight stopped with the last one, and
        // what was done is reused.
        if (session > 0) {
          closeAll(last ?? t, 'interrupted');
          for (const s of completed) reusedByEvents.add(s);
        }
        session += 1;
        fellBack.clear();
        break;
      case 'plan_created':
        plan = (e.plan && e.plan.steps) || [];
        break;
      case 'replanned':
        plan = (e.plan && e.plan.steps) || [];
        for (const k of e.kept || []) reusedByEvents.add(k);
        break;
      case 'step_started': {
        close(e.step, t, 'interrupted');
        const a = { step: e.step, attempt: e.attempt, start: t, end: null, outcome: 'running', fallback: fellBack.has(e.step), session };
        attempts.push(a);
        open.set(e.step, a);
        break;
      }
      case 'step_completed':
        close(e.step, t, 'completed');
        completed.add(e.step);
        break;
      case 'step_failed':
        close(e.step, t, e.retrying ? 'retried' : 'failed');
        break;
      case 'fallback_used':
        fellBack.add(e.step);
        break;
      case 'run_finished':
        closeAll(t, 'cancelled');
        finished = true;
        if (ticker !== null) { clearInterval(ticker); ticker = null; }
        break;
      default:
        break;
    }
    if (last === null || t > last) { last = t; lastSeen = performance.now(); }
    if (!finished && ticker === null) ticker = setInterval(() => { if (open.size) schedule(); }, 1000);
    schedule();
  }

  // Now on the events' clock: the newest event's time plus what passed on the page since.
  function now() {
    if (last === null) return origin ?? 0;
    return finished ? last : last + Math.max(0, performance.now() - lastSeen);
  }

  function endOf(a) {
    return a.end ?? Math.max(now(), a.start);
  }

  function isReused(step) {
    return reusedByReport.has(step) || reusedByEvents.has(step);
  }

  // The steps of the latest plan on its critical path (see the top of this file).
  function criticalPath() {
    const ids = plan.map(s => s.id);
    const index = new Map(ids.map((id, i) => [id, i]));
    // Each step's span in its latest session.
    const spans = new Map();
    for (const a of attempts) {
      if (!index.has(a.step)) continue;
      const s = spans.get(a.step);
      if (!s || a.session > s.session) spans.set(a.step, { session: a.session, start: a.start, end: endOf(a) });
      else if (a.session === s.session) { s.start = Math.min(s.start, a.start); s.end = Math.max(s.end, endOf(a)); }
    }
    const weight = ids.map(id => (spans.has(id) ? spans.get(id).end - spans.get(id).start : 0));
    const deps = plan.map(s => (s.dependencies || []).filter(d => index.has(d)).map(d => index.get(d)));
    const waiting = deps.map(d => d.length);
    const children = ids.map(() => []);
    deps.forEach((ds, i) => ds.forEach(d => children[d].push(i)));
    const ready = ids.map((_, i) => i).filter(i => waiting[i] === 0);
    const order = [];
    while (ready.length) {
      ready.sort((a, b) => a - b);
      const i = ready.shift();
      order.push(i);
      for (const c of children[i]) if (--waiting[c] === 0) ready.push(c);
    }
    const finish = ids.map(() => 0);
    const via = ids.map(() => null);
    for (const i of order) {
      let best = null;
      for (const d of deps[i]) if (best === null || finish[d] > finish[best] || (finish[d] === finish[best] && d < best)) best = d;
      finish[i] = weight[i] + (best === null ? 0 : finish[best]);
      via[i] = best;
    }
    let end = null;
    for (const i of order) if (end === null || finish[i] > finish[end] || (finish[i] === finish[end] && i < end)) end = i;
    const path = new Set();
    if (end === null || finish[end] <= 0) return path;
    for (let i = end; i !== null; i = via[i]) path.add(ids[i]);
    return path;
  }

  function el(name, attrs, text) {
    const n = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text != null) n.textContent = text;
    return n;
  }

  const secs = ms => `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;

  function draw() {
    scheduled = false;
    const svg = document.getElementById('timeline');
    if (!svg) return;
    const critical = criticalPath();
    document.querySelectorAll('#dag .step').forEach(g => g.classList.toggle('critical', critical.has(g.dataset.stepId)));
    // Bars by start (a stable sort keeps the journal's order for equal times), then a
    // row for each reused step that has no attempt in this run.
    const rows = attempts.slice().sort((a, b) => a.start - b.start);
    const withBars = new Set(attempts.map(a => a.step));
    for (const s of plan) {
      if (isReused(s.id) && !withBars.has(s.id)) rows.push({ step: s.id, attempt: 0, start: origin ?? 0, end: origin ?? 0, outcome: 'completed', fallback: false });
    }
    const t0 = origin ?? 0;
    const span = Math.max(1, ...rows.map(a => endOf(a) - t0));
    const labelW = 110, chartW = 390, rowH = 20, top = 24;
    const width = labelW + chartW + 16, height = top + Math.max(rows.length, 1) * rowH + 6;
    svg.replaceChildren();
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.append(el('line', { class: 'axis', x1: labelW, y1: top - 6, x2: labelW + chartW, y2: top - 6 }));
    svg.append(el('text', { class: 'tick', x: labelW, y: top - 10 }, '0 s'));
    svg.append(el('text', { class: 'tick', x: labelW + chartW, y: top - 10, 'text-anchor': 'end' }, secs(span)));
    if (!rows.length) {
      svg.append(el('text', { id: 'timeline-empty', x: 4, y: top + 12 }, 'No step has started yet.'));
      return;
    }
    rows.forEach((a, i) => {
      const end = endOf(a);
      const classes = ['bar', a.outcome];
      if (a.fallback) classes.push('fallback');
      if (critical.has(a.step)) classes.push('critical');
      if (isReused(a.step)) classes.push('reused');
      const attrs = { class: classes.join(' '), 'data-step-id': a.step, 'data-attempt': a.attempt, 'data-start-ms': a.start - t0 };
      if (a.end !== null) attrs['data-end-ms'] = a.end - t0;
      const g = el('g', attrs);
      const what = a.attempt === 0
        ? `${a.step}: reused, not run again`
        : `${a.step}, attempt ${a.attempt}${a.fallback ? ' (fallback)' : ''}: ${a.outcome}, ${secs(end - a.start)} from ${secs(a.start - t0)}`;
      g.append(el('title', {}, what));
      const y = top + i * rowH;
      g.append(el('text', { x: 4, y: y + 13 }, a.attempt === 0 ? `${a.step} (reused)` : `${a.step} #${a.attempt}`));
      g.append(el('rect', { x: labelW + ((a.start - t0) / span) * chartW, y: y + 2, width: Math.max(3, ((end - a.start) / span) * chartW), height: rowH - 6 }));
      g.addEventListener('click', () => listeners.forEach(f => f(a.step)));
      svg.append(g);
    });
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    setTimeout(draw, 50);
  }

  return {
    apply,
    // The steps the run's report says were reused (the report is the authority; events
    // say it too for resumes and replans).
    setReused(ids) { reusedByReport = new Set(ids); schedule(); },
    // Calls `f(stepId)` when a bar is clicked.
    onSelect(f) { listeners.push(f); },
    draw,
  };
})();
