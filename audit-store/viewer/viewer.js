// The audit log viewer. Every string a record holds may be hostile: the page is built with
// createElement and textContent only, never from markup. It reads the router's own endpoints
// (same origin, the browser's credentials) and keeps its whole state in the URL.
'use strict';

(() => {
  // The query API's filters (each also with a `.not` form), and what a record holds for each.
  const FILTERS = {
    action_type: r => r.action && r.action.type,
    action_result: r => r.action && r.action.result,
    actor_email: r => r.actor && r.actor.email,
    actor_id: r => r.actor && r.actor.id,
    actor_ip_address: r => r.actor && r.actor.ip_address,
    actor_type: r => r.actor && r.actor.type,
    actor_context: r => r.actor && r.actor.context,
    actor_token_id: r => r.actor && (r.actor.token_id || (r.actor.token && r.actor.token.id)),
    actor_token_name: r => r.actor && (r.actor.token_name || (r.actor.token && r.actor.token.name)),
    id: r => r.id,
    raw_ray_id: r => rayId(r),
    raw_method: r => r.raw && r.raw.method,
    raw_status_code: r => r.raw && r.raw.status_code,
    raw_uri: r => r.raw && r.raw.uri,
    resource_id: r => r.resource && r.resource.id,
    resource_product: r => r.resource && r.resource.product,
    resource_type: r => r.resource && r.resource.type,
    resource_scope: r => r.resource && r.resource.scope,
    zone_id: r => r.zone && r.zone.id,
    zone_name: r => r.zone && r.zone.name,
    account_name: r => r.account && r.account.name,
  };
  // Field paths of a record (as the detail lists them) that a filter selects on.
  const FILTER_OF_PATH = {
    'action.type': 'action_type', 'action.result': 'action_result', 'actor.email': 'actor_email',
    'actor.id': 'actor_id', 'actor.ip_address': 'actor_ip_address', 'actor.type': 'actor_type',
    'actor.context': 'actor_context', 'actor.token.id': 'actor_token_id',
    'actor.token.name': 'actor_token_name', 'actor.token_id': 'actor_token_id',
    'actor.token_name': 'actor_token_name', 'id': 'id', 'raw.ray_id': 'raw_ray_id',
    'raw.cf_ray_id': 'raw_ray_id', 'raw.method': 'raw_method', 'raw.status_code': 'raw_status_code',
    'raw.uri': 'raw_uri', 'resource.id': 'resource_id', 'resource.product': 'resource_product',
    'resource.type': 'resource_type', 'resource.scope': 'resource_scope', 'zone.id': 'zone_id',
    'zone.name': 'zone_name', 'account.name': 'account_name',
  };
  const PRESETS = { '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };
  const PAGE = 50;
  const TOP = 5;
  const HISTORY_PAGE = 20;
  const RECORD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  // The patch operations a history entry lists before "and n more".
  const PATCH_SHOWN = 8;

  // The API's base path: this page is `<base>/viewer`.
  const base = location.pathname.replace(/\/viewer\/?$/, '');
  const accountMatch = base.match(/\/accounts\/([^/]+)\/logs\/audit$/);
  const account = accountMatch ? decodeURIComponent(accountMatch[1]) : '';

  const $ = id => document.getElementById(id);
  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
  const hourFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  // ----------------------------------------------------------------------------------------
  // DOM helpers: elements and text nodes only.

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
  }

  function clear(node) {
    while (node.firstChild) node.firstChild.remove();
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attributes, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    append(node, children);
    return node;
  }

  // ----------------------------------------------------------------------------------------
  // State, in the URL: the API's parameters (range and filters), a preset and an open record.

  let state = readState();

  function readState() {
    const params = new URLSearchParams(location.search);
    const filters = [];
    for (const [key, value] of params) {
      if (FILTERS[key.replace(/\.not$/, '')] !== undefined || key === 'raw_cf_ray_id') {
        filters.push([key === 'raw_cf_ray_id' ? 'raw_ray_id' : key, value]);
      }
    }
    const range = params.get('range');
    const since = Date.parse(params.get('since') || '');
    const before = Date.parse(params.get('before') || '');
    const custom = !range && Number.isFinite(since) && Number.isFinite(before) && before > since;
    return {
      range: custom ? null : (PRESETS[range] ? range : '24h'),
      since: custom ? since : null,
      before: custom ? before : null,
      filters,
      // Only a record id: anything else would become a path of the API's (`..`).
      record: RECORD_ID.test(params.get('record') || '') ? params.get('record') : null,
    };
  }

  function stateQuery(s) {
    const params = new URLSearchParams();
    if (s.range) params.set('range', s.range);
    else {
      params.set('since', new Date(s.since).toISOString());
      params.set('before', new Date(s.before).toISOString());
    }
    for (const [key, value] of s.filters) params.append(key, value);
    if (s.record) params.set('record', s.record);
    return params.toString();
  }

  function go(change, reload = true) {
    state = Object.assign({}, state, change);
    history.pushState(null, '', '?' + stateQuery(state));
    if (reload) load();
  }

  // The range of the view, ms: a preset ends now (fixed when the view loads).
  let range = { since: 0, before: 0 };
  function computeRange() {
    if (state.range) {
      const before = Date.now() + 1000;
      range = { since: before - PRESETS[state.range], before };
    } else {
      range = { since: state.since, before: state.before };
    }
  }

  function apiParams(extra) {
    const params = new URLSearchParams();
    params.set('since', new Date(range.since).toISOString());
    params.set('before', new Date(range.before).toISOString());
    for (const [key, value] of state.filters) params.append(key, value);
    for (const [key, value] of Object.entries(extra || {})) params.set(key, value);
    return params;
  }

  // ----------------------------------------------------------------------------------------
  // The API.

  async function api(path, params, accept) {
    const url = base + path + (params ? '?' + params.toString() : '');
    const response = await fetch(url, {
      credentials: 'same-origin',
      headers: { Accept: accept || 'application/json' },
    });
    if (accept && accept !== 'application/json') return response;
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok || !body || body.success === false) {
      const message = body && body.errors && body.errors[0] && body.errors[0].message;
      const error = new Error(message || ('the server answered ' + response.status));
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ----------------------------------------------------------------------------------------
  // Values.

  function rayId(r) {
    return r.raw && (r.raw.cf_ray_id || r.raw.ray_id);
  }

  // This browser's offset from UTC at `ms`, as the stats endpoint's `utc_offset` takes it.
  function utcOffset(ms) {
    const minutes = -new Date(ms).getTimezoneOffset();
    if (!Number.isFinite(minutes) || minutes === 0 || Math.abs(minutes) > 14 * 60) return 'Z';
    const abs = Math.abs(minutes);
    const two = n => String(n).padStart(2, '0');
    return (minutes < 0 ? '-' : '+') + two(Math.floor(abs / 60)) + ':' + two(abs % 60);
  }

  function timeNode(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return el('span', { text: String(iso) });
    return el('time', {
      datetime: date.toISOString(),
      title: date.toISOString().replace('T', ' ').replace('Z', ' UTC'),
      text: timeFormat.format(date),
    });
  }

  function show(value) {
    if (value === null || value === undefined) return '—';
    return typeof value === 'string' ? value : JSON.stringify(value);
  }

  // A value that filters the view when selected.
  function valueButton(filter, value, label) {
    if (value === null || value === undefined || value === '') return null;
    const text = show(value);
    return el('button', {
      type: 'button',
      class: 'value',
      title: 'Filter by ' + filter + ' = ' + text,
      'data-filter': filter,
      onclick: event => {
        event.stopPropagation();
        addFilter(filter, String(value));
      },
    }, label ? label + ' ' : '', text);
  }

  // ----------------------------------------------------------------------------------------
  // Filters.

  function addFilter(name, value) {
    const filters = state.filters.filter(([k, v]) => !(k.replace(/\.not$/, '') === name && v === value));
    filters.push([name, value]);
    go({ filters, record: null });
  }

  function renderChips() {
    const chips = $('chips');
    clear(chips);
    state.filters.forEach(([key, value], index) => {
      const negated = key.endsWith('.not');
      const name = key.replace(/\.not$/, '');
      chips.append(el('li', { class: negated ? 'chip-not' : 'chip' },
        el('button', {
          type: 'button',
          title: negated ? 'Include ' + value + ' again' : 'Exclude ' + value + ' instead',
          'aria-label': name + (negated ? ' is not ' : ' is ') + value + ': select to '
            + (negated ? 'include' : 'exclude'),
          onclick: () => {
            const filters = state.filters.slice();
            filters[index] = [negated ? name : name + '.not', value];
            go({ filters });
          },
        }, name + (negated ? ' ≠ ' : ' = ') + value),
        el('button', {
          type: 'button',
          'aria-label': 'Remove the filter ' + name + ' ' + value,
          onclick: () => go({ filters: state.filters.filter((_, i) => i !== index) }),
        }, '✕')));
    });
    if (state.filters.length > 1) {
      chips.append(el('li', {}, el('button', {
        type: 'button', onclick: () => go({ filters: [] }),
      }, 'Clear all')));
    }
  }

  // ----------------------------------------------------------------------------------------
  // The list.

  let cursor = null;
  let loading = false;
  let generation = 0;

  function renderRecord(r) {
    const type = r.action && r.action.type;
    const result = r.action && r.action.result;
    const gap = type === 'gap';
    const item = el('li', { class: 'rec' + (gap ? ' gap' : ''), 'data-id': r.id });
    const open = el('button', {
      type: 'button',
      class: 'open',
      'aria-label': 'Open the record ' + (r.id || ''),
      onclick: () => openRecord(r.id, r, open),
    }, 'Open');
    item.append(
      el('div', { class: 'line' }, timeNode(r.action && r.action.time)),
      el('div', { class: 'line' },
        gap ? el('span', { class: 'badge gap', title: 'Records were lost here: a gap record' }, 'GAP') : null,
        valueButton('action_type', type),
        valueButton('action_result', result),
        el('span', { class: 'muted', text: show(r.action && r.action.description) }),
        el('span', { class: 'label', text: 'by' }),
        valueButton('actor_email', r.actor && r.actor.email)
          || valueButton('actor_id', r.actor && r.actor.id)
          || el('span', { text: show(r.actor && r.actor.type) }),
        valueButton('actor_token_name', FILTERS.actor_token_name(r), 'token'),
        valueButton('actor_ip_address', r.actor && r.actor.ip_address, 'from'),
        valueButton('resource_product', r.resource && r.resource.product, 'product'),
        valueButton('resource_id', r.resource && r.resource.id, (r.resource && r.resource.type) || 'resource'),
        valueButton('raw_ray_id', rayId(r), 'ray'),
        el('span', { class: 'uri' },
          show(r.raw && r.raw.method) + ' ' + show(r.raw && r.raw.uri) + ' → '
          + show(r.raw && r.raw.status_code))),
      el('div', { class: 'line' }, open),
    );
    const resultButton = item.querySelector('[data-filter="action_result"]');
    if (resultButton) resultButton.classList.add('badge', result === 'failure' ? 'failure' : 'success');
    return item;
  }

  async function loadPage(first) {
    if (loading) return;
    loading = true;
    const mine = generation;
    const status = $('status');
    status.textContent = first ? 'Loading records…' : 'Loading more records…';
    status.classList.remove('error');
    const extra = { limit: String(PAGE) };
    if (!first && cursor) extra.cursor = cursor;
    try {
      const body = await api('', apiParams(extra));
      if (mine !== generation) return;
      const list = $('records');
      if (first) clear(list);
      for (const record of body.result) list.append(renderRecord(record));
      cursor = (body.result_info && body.result_info.cursor) || null;
      $('more').hidden = !cursor;
      const shown = list.children.length;
      status.textContent = shown === 0
        ? 'No records match this view. Widen the time range or remove a filter.'
        : shown + ' record' + (shown === 1 ? '' : 's') + ' shown, newest first'
          + (cursor ? '; more are available.' : '; that is all of them.');
    } catch (error) {
      if (mine !== generation) return;
      status.textContent = 'Cannot read the audit log: ' + error.message;
      status.classList.add('error');
    } finally {
      if (mine === generation) loading = false;
    }
  }

  // ----------------------------------------------------------------------------------------
  // Trends.

  async function loadTrends() {
    const chart = $('chart');
    const tops = $('tops');
    const mine = generation;
    clear(chart);
    clear(tops);
    chart.append(el('p', { class: 'muted', text: 'Loading trends…' }));
    // The buckets follow this browser's time zone: its offset at the range's end (fixed over
    // the range, as the endpoint's `utc_offset` is).
    const offset = utcOffset(range.before);
    let body;
    try {
      body = await api('/stats', apiParams({ top: String(TOP), utc_offset: offset }));
    } catch (error) {
      if (mine !== generation) return;
      clear(chart);
      chart.append(el('p', { class: 'error', text: 'Cannot read the trends: ' + error.message }));
      return;
    }
    if (mine !== generation) return;
    const stats = body.result;
    clear(chart);
    const series = stats.series || [];
    const bucketFormat = stats.interval === 'day' ? dayFormat : hourFormat;
    const peak = Math.max(1, ...series.map(b => b.success + b.failure));
    const width = Math.max(1, series.length) * 10;
    const picture = svg('svg', {
      viewBox: '0 0 ' + width + ' 100', preserveAspectRatio: 'none', role: 'img',
      'aria-label': 'Records per ' + stats.interval + ': ' + stats.count + ' in all, '
        + series.reduce((n, b) => n + b.failure, 0) + ' failed',
    });
    series.forEach((bucket, i) => {
      const ok = (bucket.success / peak) * 100;
      const fail = (bucket.failure / peak) * 100;
      const label = bucketFormat.format(new Date(bucket.time)) + ': ' + bucket.success
        + ' succeeded, ' + bucket.failure + ' failed';
      picture.append(svg('g', {},
        svg('title', {}, label),
        svg('rect', { class: 'ok', x: i * 10 + 1, width: 8, y: 100 - ok, height: ok }),
        svg('rect', { class: 'fail', x: i * 10 + 1, width: 8, y: 100 - ok - fail, height: fail })));
    });
    const zone = stats.utc_offset === 'Z' ? 'UTC' : 'UTC' + stats.utc_offset;
    chart.append(
      el('p', { class: 'legend' }, stats.count + ' records, per ' + stats.interval + ' of your time zone ('
        + zone + ') ', el('span', { class: 'ok', text: 'success' }), ' ', el('span', { class: 'fail', text: 'failure' })),
      picture,
      el('div', { class: 'axis muted' },
        series.length ? timeNode(series[0].time) : null,
        series.length ? timeNode(series[series.length - 1].time) : null));
    const list = (title, entries, filter, key, label) => el('div', {},
      el('h3', { text: title }),
      entries.length === 0 ? el('p', { class: 'muted', text: 'None.' }) : el('ol', {},
        entries.map(entry => el('li', {},
          entry[key] === null ? el('span', { class: 'muted', text: label(entry) })
            : el('button', {
              type: 'button', class: 'value', title: 'Filter by ' + filter + ' = ' + entry[key],
              onclick: () => addFilter(filter, String(entry[key])),
            }, label(entry)),
          ' ', el('span', { class: 'muted', text: '(' + entry.count + ')' })))));
    tops.append(
      list('Top actors', stats.actors || [], 'actor_email', 'actor_email', e => show(e.actor_email)),
      list('Top actions', stats.actions || [], 'action_type', 'action_type',
        e => e.action_type + (e.resource_type ? ' ' + e.resource_type : '')),
      list('Top products', stats.products || [], 'resource_product', 'resource_product',
        e => show(e.resource_product)));
  }

  // ----------------------------------------------------------------------------------------
  // Integrity.

  // The range last verified (or being verified), and its check's number: verification does
  // not depend on the filters, so only a new range is verified again (a preset range, once a
  // minute at most, as it moves with the clock).
  let integrityKey = null;
  let integrityCheck = 0;

  function loadIntegrity() {
    const key = state.range
      ? state.range + '@' + Math.floor(Date.now() / 60e3)
      : range.since + '/' + range.before;
    if (key === integrityKey) return;
    integrityKey = key;
    verifyRange(++integrityCheck);
  }

  async function verifyRange(mine) {
    const node = $('integrity');
    node.className = '';
    node.textContent = 'Checking the chain for this range…';
    const params = new URLSearchParams({
      since: new Date(range.since).toISOString(), before: new Date(range.before).toISOString(),
    });
    try {
      const report = (await api('/verify', params)).result;
      if (mine !== integrityCheck) return;
      if (report.outcome === 'ok') {
        node.className = 'integrity-ok';
        node.textContent = '✓ Chain verified for this range: ' + report.records + ' records, '
          + report.checkpoints + ' signed checkpoints.'
          + (report.after_latest_checkpoint ? ' ' + report.after_latest_checkpoint
            + ' newer records await the next checkpoint.' : '');
      } else if (report.outcome === 'unverifiable') {
        node.textContent = 'Not verifiable yet: ' + show(report.unverifiable);
      } else {
        node.className = 'integrity-bad';
        node.textContent = '✗ The chain is broken in this range: ' + show(report.broken)
          + '. Records may have been altered or deleted.';
      }
    } catch (error) {
      if (mine !== integrityCheck) return;
      if (error.status === 429) {
        // Another check of this account runs (another view's): try again once it is done.
        node.textContent = 'Checking the chain for this range… (waiting for another check)';
        setTimeout(() => { if (mine === integrityCheck) verifyRange(mine); }, 2000);
        return;
      }
      // Not verified: the next view of this range tries again.
      integrityKey = null;
      node.textContent = error.status === 501
        ? 'This log is not chained: tamper evidence is not enabled.'
        : 'Cannot verify the chain: ' + error.message;
    }
  }

  // ----------------------------------------------------------------------------------------
  // A record.

  let returnFocus = null;

  function fieldRows(value, path, rows) {
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      for (const [key, inner] of Object.entries(value)) {
        const at = path ? path + '.' + key : key;
        if (at === 'resource.request' || at === 'resource.response' || at === 'change') continue;
        fieldRows(inner, at, rows);
      }
    } else {
      const filter = FILTER_OF_PATH[path];
      rows.push(el('dt', { text: path }),
        el('dd', {}, path === 'action.time' ? timeNode(value)
          : (filter ? valueButton(filter, value) : null) || show(value)));
    }
    return rows;
  }

  function jsonBlock(title, value) {
    if (value === undefined || value === null) return null;
    return el('section', {}, el('h3', { text: title }), el('pre', { text: JSON.stringify(value, null, 2) }));
  }

  function diffTable(change) {
    if (!change || typeof change !== 'object') return null;
    const before = change.before && typeof change.before === 'object' ? change.before : {};
    const after = change.after && typeof change.after === 'object' ? change.after : {};
    const keys = Array.from(new Set(Object.keys(before).concat(Object.keys(after)))).sort();
    return el('section', {}, el('h3', { text: 'Change' }),
      el('table', { class: 'diff' },
        el('thead', {}, el('tr', {}, el('th', { text: 'Field' }), el('th', { text: 'Before' }), el('th', { text: 'After' }))),
        el('tbody', {}, keys.map(key => {
          const was = JSON.stringify(before[key]);
          const now = JSON.stringify(after[key]);
          return el('tr', { class: was === now ? '' : 'changed' },
            el('th', { text: key }), el('td', { text: show(before[key]) }), el('td', { text: show(after[key]) }));
        }))));
  }

  function relatedList(title, records, skip) {
    const others = records.filter(r => r.id !== skip);
    if (others.length === 0) return null;
    return el('section', {}, el('h3', { text: title }),
      el('ol', {}, others.map(r => el('li', {},
        timeNode(r.action && r.action.time), ' ',
        el('button', {
          type: 'button', class: 'value', onclick: () => openRecord(r.id, r, null),
        }, show(r.action && r.action.type) + ' ' + show(r.raw && r.raw.uri)),
        ' ', el('span', { class: 'muted', text: show(r.actor && (r.actor.email || r.actor.id)) })))));
  }

  async function openRecord(id, known, opener) {
    if (!id) return;
    if (opener) returnFocus = opener;
    if (state.record !== id) go({ record: id }, false);
    const detail = $('detail');
    const body = $('detail-body');
    clear(body);
    detail.hidden = false;
    detail.focus();
    let record = known;
    if (!record) {
      body.append(el('p', { text: 'Loading the record…' }));
      try {
        record = (await api('/' + encodeURIComponent(id))).result;
      } catch (error) {
        clear(body);
        body.append(el('p', { class: 'error', text: 'Cannot read the record: ' + error.message }));
        return;
      }
      clear(body);
    }
    const gap = record.action && record.action.type === 'gap';
    $('detail-title').textContent = show(record.action && record.action.description) || 'Record';
    append(body, [
      gap ? el('p', { class: 'badge gap', text: 'A gap record: records were lost at this point, and the log says how.' }) : null,
      el('dl', { class: 'fields' }, fieldRows(record, '', [])),
      jsonBlock('Request body', record.resource && record.resource.request),
      jsonBlock('Response body', record.resource && record.resource.response),
      diffTable(record.change)]);
    const related = el('div', {});
    body.append(related);
    const ray = rayId(record);
    const time = Date.parse(record.action && record.action.time);
    if (ray && Number.isFinite(time)) {
      const params = new URLSearchParams({
        since: new Date(time - 86400e3).toISOString(), before: new Date(time + 86400e3).toISOString(),
        raw_ray_id: ray, limit: '50',
      });
      api('', params).then(answer => {
        if (state.record === id) append(related, [relatedList('Records of the same ray id', answer.result, id)]);
      }, () => {});
    }
    body.insertBefore(historySection(record, id), related);
  }

  // ----------------------------------------------------------------------------------------
  // A resource's history: the writes to the resource a record acted on (the history
  // endpoint), over the view's range widened to hold the record, newest first. Each entry
  // opens its record, whose own history then shows; the section keeps the API query it read
  // in `data-api`.

  function historyParams(record, after) {
    const time = Date.parse(record.action.time);
    const params = new URLSearchParams({
      since: new Date(Math.min(range.since, time)).toISOString(),
      before: new Date(Math.max(range.before, time + 1)).toISOString(),
      action_time: record.action.time,
      limit: String(HISTORY_PAGE),
    });
    if (after) params.set('cursor', after);
    return params;
  }

  const HISTORY_STATUS = {
    exact: 'The values before and after each write are the ones the app recorded.',
    approximate: 'Values are derived from the recorded (redacted) request and response bodies: fields may be missing.',
    unavailable: 'Nothing recorded tells the values before and after.',
  };

  function patchList(patch) {
    if (!Array.isArray(patch) || patch.length === 0) return null;
    const items = patch.slice(0, PATCH_SHOWN).map(op => el('li', {},
      el('span', { class: 'op', text: show(op && op.op) }), ' ',
      el('code', { text: show(op && op.path) }),
      op && typeof op === 'object' && 'value' in op ? ' = ' + show(op.value) : ''));
    if (patch.length > PATCH_SHOWN) {
      items.push(el('li', { class: 'muted', text: 'and ' + (patch.length - PATCH_SHOWN) + ' more' }));
    }
    return el('ul', { class: 'patch', 'aria-label': 'Changes' }, items);
  }

  function historyEntry(entry, current) {
    const { history: values, ...record } = entry;
    const what = show(record.action && record.action.type) + ' by '
      + show(record.actor && (record.actor.email || record.actor.id || record.actor.type));
    const item = el('li', { 'data-id': record.id, class: record.id === current ? 'current' : '' },
      timeNode(record.action && record.action.time), ' ',
      record.id === current
        ? el('strong', { text: what + ' (this record)' })
        : el('button', {
          type: 'button', class: 'value follow',
          'aria-label': 'Open the write ' + what + ' of ' + show(record.action && record.action.time),
          onclick: () => openRecord(record.id, record, null),
        }, what),
      values && values.source !== 'none'
        ? el('span', { class: 'muted', text: ' (from ' + (values.source === 'change' ? 'the recorded change' : 'the bodies') + ')' })
        : null,
      patchList(values && values.patch));
    return item;
  }

  function historySection(record, id) {
    const section = el('section', { id: 'history', 'aria-labelledby': 'history-title' },
      el('h3', { id: 'history-title', text: 'History of this resource' }));
    const resource = record.resource || {};
    if (!resource.type || !resource.id || !record.action || !record.action.time) {
      section.append(el('p', { class: 'muted', text: 'This record names no resource: it has no history.' }));
      return section;
    }
    const list = el('ol', { class: 'history' });
    const status = el('p', { class: 'muted', role: 'status', text: 'Loading the history…' });
    const more = el('button', { type: 'button', hidden: true }, 'Load more history');
    section.append(
      el('p', {}, 'Writes to ', el('code', { text: show(resource.type) }), ' ',
        el('code', { text: show(resource.id) }), ', newest first:'),
      status, list, more);
    const read = after => {
      const params = historyParams(record, after);
      section.dataset.api = '/' + encodeURIComponent(id) + '/history?' + params.toString();
      more.hidden = true;
      return api('/' + encodeURIComponent(id) + '/history', params).then(answer => {
        if (state.record !== id) return;
        const entries = Array.isArray(answer.result) ? answer.result : [];
        for (const entry of entries) list.append(historyEntry(entry, id));
        const next = answer.result_info && answer.result_info.cursor;
        more.hidden = !next;
        more.onclick = () => { read(next); };
        const shown = list.children.length;
        const kind = answer.result_info && answer.result_info.history_status;
        status.textContent = shown === 0
          ? 'No write to this resource in this range.'
          : shown + ' write' + (shown === 1 ? '' : 's') + (next ? ' shown; more are available. ' : '. ')
            + (HISTORY_STATUS[kind] || '');
      }, error => {
        if (state.record !== id) return;
        status.textContent = 'Cannot read the history: ' + error.message;
        status.classList.add('error');
      });
    };
    read(null);
    return section;
  }

  function closeRecord() {
    $('detail').hidden = true;
    if (state.record) go({ record: null }, false);
    if (returnFocus && document.contains(returnFocus)) returnFocus.focus();
    returnFocus = null;
  }

  // ----------------------------------------------------------------------------------------
  // Export.

  async function exportAs(kind) {
    const status = $('status');
    const accept = kind === 'csv' ? 'text/csv' : 'application/x-ndjson';
    status.textContent = 'Exporting…';
    try {
      const response = await api('', apiParams(), accept);
      const type = response.headers.get('content-type') || '';
      if (!response.ok || !type.startsWith(accept)) {
        status.textContent = kind === 'csv' && response.ok
          ? 'CSV export is not available on this server; export NDJSON instead.'
          : 'The export failed: the server answered ' + response.status + '.';
        return;
      }
      const blob = await response.blob();
      const link = el('a', {
        href: URL.createObjectURL(blob),
        download: 'audit-log-' + account.replace(/[^A-Za-z0-9_-]/g, '_') + '-'
          + new Date(range.since).toISOString().slice(0, 19).replace(/:/g, '') + '.' + kind,
      });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
      status.textContent = 'Exported ' + blob.size + ' bytes as ' + kind.toUpperCase() + '.';
    } catch (error) {
      status.textContent = 'The export failed: ' + error.message;
    }
  }

  // ----------------------------------------------------------------------------------------
  // The view.

  function toLocalInput(ms) {
    const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
    return date.toISOString().slice(0, 19);
  }

  function load() {
    generation += 1;
    loading = false;
    cursor = null;
    computeRange();
    $('account').textContent = account;
    for (const button of document.querySelectorAll('#ranges [data-range]')) {
      button.setAttribute('aria-pressed', String(button.dataset.range === state.range));
    }
    $('since').value = toLocalInput(range.since);
    $('before').value = toLocalInput(range.before);
    clear($('range-label'));
    $('range-label').append('Showing ', timeNode(new Date(range.since).toISOString()), ' to ',
      timeNode(new Date(range.before).toISOString()), ' (your time zone; UTC on hover)');
    renderChips();
    loadPage(true);
    loadTrends();
    loadIntegrity();
    if (state.record) openRecord(state.record, null, null);
    else $('detail').hidden = true;
  }

  function start() {
    for (const button of document.querySelectorAll('#ranges [data-range]')) {
      button.addEventListener('click', () => go({ range: button.dataset.range, since: null, before: null }));
    }
    $('apply-range').addEventListener('click', () => {
      const since = new Date($('since').value).getTime();
      const before = new Date($('before').value).getTime();
      if (!Number.isFinite(since) || !Number.isFinite(before) || before <= since) {
        $('status').textContent = 'The custom range needs a start before its end.';
        return;
      }
      go({ range: null, since, before });
    });
    $('more').addEventListener('click', () => loadPage(false));
    $('close-detail').addEventListener('click', closeRecord);
    $('export-ndjson').addEventListener('click', () => exportAs('ndjson'));
    $('export-csv').addEventListener('click', () => exportAs('csv'));
    document.addEventListener('keydown', event => {
      if (event.key === 'Escape' && !$('detail').hidden) closeRecord();
    });
    window.addEventListener('popstate', () => { state = readState(); load(); });
    // Infinite scroll: the next page loads as the "Load more" button comes into view.
    if ('IntersectionObserver' in window) {
      new IntersectionObserver(entries => {
        if (entries.some(e => e.isIntersecting) && cursor && !loading) loadPage(false);
      }).observe($('more'));
    }
    load();
  }

  start();
})();
