// Live updates: the server says when what this page shows changed; the page fetches itself and
// swaps <main>. Actions go to the JSON API with the page's CSRF token.
(function () {
  'use strict';
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : '';
  var source = null;
  var reopen = null;
  var stale = false;  // an update arrived while the person was typing

  function notice(text) {
    var box = document.getElementById('notice');
    if (!box) { box = document.createElement('div'); box.id = 'notice'; document.body.appendChild(box); }
    box.textContent = text; box.classList.add('shown');
    setTimeout(function () { box.classList.remove('shown'); }, 4000);
  }

  function typing() {
    var field = document.activeElement;
    return field && (field.tagName === 'INPUT' || field.tagName === 'TEXTAREA');
  }

  function refresh() {
    if (typing()) { stale = true; return; }  // do not eat typing: catch up when the field loses focus
    stale = false;
    fetch(location.href, {credentials: 'same-origin'}).then(function (r) { return r.text(); }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, 'text/html').querySelector('main');
      if (!fresh) return;
      // A message written but not sent yet survives the update.
      var draft = document.querySelector('form[data-message] textarea');
      var kept = fresh.querySelector('form[data-message] textarea');
      if (draft && kept && draft.value) kept.value = draft.value;
      document.querySelector('main').replaceWith(fresh);
    });
  }

  function post(url, body) {
    return fetch(url, {
      method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.text().then(function (text) {
        var answer = null;
        try { answer = JSON.parse(text); } catch (err) { answer = null; }
        if (!r.ok) throw new Error((answer && answer.message) || text || r.statusText);
        return answer;
      });
    });
  }

  // The stream is closed whenever the page is hidden (navigated away from, or put in the
  // back/forward cache), so a tab never holds more than one, and reopened when it is shown again.
  function open() {
    close();
    var main = document.querySelector('main');
    var url = '/api/stream?page=' + encodeURIComponent(location.pathname + location.search) +
              '&seen=' + encodeURIComponent(main ? main.dataset.fingerprint || '' : '');
    source = new EventSource(url);
    source.onmessage = refresh;
    source.onerror = function () {
      // A refusal (e.g. too many streams) ends the stream for good: try again a while later.
      if (source && source.readyState === EventSource.CLOSED) { source = null; reopen = setTimeout(open, 30000); }
    };
  }

  function close() {
    if (reopen !== null) { clearTimeout(reopen); reopen = null; }
    if (source !== null) { source.close(); source = null; }
  }

  document.addEventListener('click', function (e) {
    var button = e.target.closest('button[data-post]');
    if (!button) return;
    if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
    var body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
    post(button.dataset.post, body).then(function () { notice('Done'); refresh(); }, function (err) { notice(err.message); });
  });
  // Deny a permission request, with what the person says to the agent (optional).
  document.addEventListener('submit', function (e) {
    var form = e.target.closest('form[data-deny]');
    if (!form) return;
    e.preventDefault();
    var message = form.elements.message.value.trim();
    var body = message ? {behavior: 'deny', message: message} : {behavior: 'deny'};
    post(form.dataset.deny, body).then(function () {
      form.elements.message.blur(); notice('Denied'); refresh();
    }, function (err) { notice(err.message); });
  });
  document.addEventListener('submit', function (e) {
    var form = e.target.closest('form[data-send-event]');
    if (!form) return;
    e.preventDefault();
    var data = null, raw = form.elements.data.value.trim();
    try { data = raw ? JSON.parse(raw) : null; } catch (err) { notice('data is not JSON: ' + err.message); return; }
    post('/events/send', {name: form.elements.name.value, data: data}).then(function (answer) {
      notice('Sent; woke ' + (answer.woken_run_ids.length || 'no') + ' run(s)'); refresh();
    }, function (err) { notice(err.message); });
  });
  // A message to a sub-agent, from its run page.
  document.addEventListener('submit', function (e) {
    var form = e.target.closest('form[data-message]');
    if (!form) return;
    e.preventDefault();
    var text = form.elements.text.value.trim();
    if (!text) { notice('Write the message first'); return; }
    post(form.dataset.message, {text: text}).then(function (answer) {
      form.elements.text.value = ''; form.elements.text.blur();
      notice('Queued: it reaches the agent ' + answer.delivery); refresh();
    }, function (err) { notice(err.message); });
  });
  // A run's budget: the limits given (a limit left empty stays as it was).
  document.addEventListener('submit', function (e) {
    var form = e.target.closest('form[data-budget]');
    if (!form) return;
    e.preventDefault();
    var body = {}, usd = form.elements.max_budget_usd.value.trim(), turns = form.elements.max_turns.value.trim();
    if (usd) body.max_budget_usd = Number(usd);
    if (turns) body.max_turns = Number(turns);
    if (!usd && !turns) { notice('Give US dollars, turns or both'); return; }
    post(form.dataset.budget, body).then(function (answer) {
      var went = answer.resumed_run_ids.length;
      if (document.activeElement) document.activeElement.blur();
      notice(went ? 'Budget set: ' + went + ' paused run(s) go on' : 'Budget set'); refresh();
    }, function (err) { notice(err.message); });
  });
  document.addEventListener('focusout', function () {
    if (stale) setTimeout(function () { if (stale && !typing()) refresh(); }, 0);
  });

  if (window.EventSource && document.querySelector('nav')) {
    window.addEventListener('pagehide', close);
    window.addEventListener('pageshow', function (e) { if (e.persisted) open(); });
    open();
  }
})();

// ==== Every page after each live swap of <main>: folds kept open, copy buttons, logs that follow their
// newest line, times shown relative (the absolute time in the viewer's zone on hover), counters for what
// still goes on, the nav's approvals badge and its current page. ====
(function () {
  'use strict';
  var UNITS = [['d', 86400, 'h', 3600], ['h', 3600, 'min', 60], ['min', 60, 's', 1]];
  var folds = {};  // data-key -> open, for every fold a person (or the page) opened or closed
  var logs = {};  // a log's stream -> {bottom: it was scrolled to its end, top: where it was}

  // A length of time as the server writes it (cells.lasted): 340 ms, 4.2 s, 42 s, 3 min 5 s, 2 h 4 min.
  function lasted(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 1) return Math.round(seconds * 1000) + ' ms';
    if (seconds < 10) return seconds.toFixed(1) + ' s';
    var whole = Math.floor(seconds);
    for (var i = 0; i < UNITS.length; i++) {
      var unit = UNITS[i];
      if (whole >= unit[1]) {
        var rest = Math.floor((whole % unit[1]) / unit[3]);
        return Math.floor(whole / unit[1]) + ' ' + unit[0] + (rest ? ' ' + rest + ' ' + unit[2] : '');
      }
    }
    return whole + ' s';
  }

  function local(ms) {
    return new Date(ms).toLocaleString(undefined, {
      year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
      second: '2-digit', timeZoneName: 'short'
    });
  }

  // A <time> (cells.time_element): relative ('3 min ago', 'in 2 h'), elapsed ('42 s', a live run's), or
  // its text kept (an offset on a timeline's axis); the absolute time on hover, once.
  function relative(element, now) {
    var at = Date.parse(element.getAttribute('datetime'));
    if (isNaN(at)) return;
    var elapsed = 'elapsed' in element.dataset;
    if (!element.dataset.utc) {
      element.dataset.utc = new Date(at).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
      element.title = (elapsed ? 'since ' : '') + local(at) + ' (' + element.dataset.utc + ')';
    }
    if ('keep' in element.dataset) return;
    var seconds = (at - now) / 1000;
    if (elapsed) element.textContent = lasted(-seconds);
    else if (Math.abs(seconds) < 5) element.textContent = 'just now';
    else element.textContent = seconds < 0 ? lasted(-seconds) + ' ago' : 'in ' + lasted(seconds);
  }

  function times(selector) {
    var now = Date.now();
    document.querySelectorAll(selector).forEach(function (element) { relative(element, now); });
  }

  function follow(first) {
    document.querySelectorAll('pre.log[data-log]').forEach(function (log) {
      var kept = logs[log.dataset.log];
      var bottom = first || !kept || kept.bottom;
      log.scrollTop = bottom ? log.scrollHeight : kept.top;
      logs[log.dataset.log] = {bottom: bottom, top: log.scrollTop};
    });
  }

  function reopen() {
    document.querySelectorAll('main details[data-key]').forEach(function (details) {
      var open = folds[details.dataset.key];
      if (open !== undefined && details.open !== open) details.open = open;
    });
  }

  function badge() {
    var title = document.querySelector('main h1[data-approvals]'), shown = document.querySelector('[data-approvals-badge]');
    if (!title || !shown) return;
    var count = title.dataset.approvals || '0';
    shown.textContent = count;
    shown.setAttribute('aria-label', count + (count === '1' ? ' approval' : ' approvals') + ' waiting');
    shown.hidden = count === '0';
  }

  function current() {
    var path = location.pathname;
    document.querySelectorAll('header.top nav a:not([data-approvals-badge])').forEach(function (link) {
      var target = link.getAttribute('href');
      var here = target === '/' ? path === '/' || path.indexOf('/runs/') === 0 : path.indexOf(target) === 0;
      if (here) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
    });
  }

  // A value drawn as a tree (timeline.json_value) written back as JSON, indented as json.dumps(indent=2):
  // every scalar is drawn as its JSON text, so nothing is parsed and no number loses digits.
  function jsonOf(element, indent) {
    if (!element.classList.contains('j-body')) return element.textContent;
    var object = element.classList.contains('j-obj'), inner = indent + '  ', parts = [];
    Array.prototype.forEach.call(element.children, function (row) {
      var key = row.querySelector(':scope > .j-key, :scope > summary > .j-key');
      parts.push(inner + (object ? JSON.stringify(key.textContent) + ': ' : '') + jsonOf(row.lastElementChild, inner));
    });
    return (object ? '{' : '[') + '\n' + parts.join(',\n') + '\n' + indent + (object ? '}' : ']');
  }

  function copied(value) {
    var text = value.querySelector('pre.j-text');
    if (text) return text.textContent;
    var drawn = value.querySelector('.j-body, [class^="j-"]');
    return drawn ? jsonOf(drawn, '') : '';
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var area = document.createElement('textarea');
      area.value = text; area.setAttribute('readonly', ''); area.className = 'offscreen';
      document.body.appendChild(area); area.select();
      var done = document.execCommand('copy');
      document.body.removeChild(area);
      if (done) resolve(); else reject(new Error('the browser refused to copy'));
    });
  }

  function fresh(first) { reopen(); follow(first); times('time[datetime]'); badge(); current(); }

  document.addEventListener('toggle', function (e) {
    var details = e.target;
    if (details.dataset && details.dataset.key) folds[details.dataset.key] = details.open;
  }, true);
  document.addEventListener('scroll', function (e) {
    var log = e.target;
    if (!log.dataset || !log.dataset.log) return;
    logs[log.dataset.log] = {bottom: log.scrollTop + log.clientHeight >= log.scrollHeight - 4, top: log.scrollTop};
  }, true);
  document.addEventListener('click', function (e) {
    var button = e.target.closest('button.copy');
    if (!button) return;
    copy(copied(button.closest('.value'))).then(function () {
      button.textContent = 'Copied'; button.classList.add('copied');
      setTimeout(function () { button.textContent = 'Copy'; button.classList.remove('copied'); }, 1500);
    }, function (err) { button.textContent = 'Copy failed'; button.title = err.message; });
  });
  // The live update replaces <main>, a child of <body>: nothing deeper needs watching.
  new MutationObserver(function (changes) {
    var swapped = changes.some(function (change) {
      return Array.prototype.some.call(change.addedNodes, function (node) { return node.tagName === 'MAIN'; });
    });
    if (swapped) fresh(false);
  }).observe(document.body, {childList: true});
  fresh(true);
  setInterval(function () { times('time[data-elapsed]'); }, 1000);
  setInterval(function () { times('time[datetime]:not([data-elapsed]):not([data-keep])'); }, 20000);
})();
// ==== end of every page ====

// ---- Sign-in link: `serve --http` on a terminal prints /login#token=...; the fragment never leaves the
// browser, so the page takes the token from it, forgets the fragment and signs in at once.
(function () {
  'use strict';
  if (location.hash.indexOf('#token=') !== 0) return;
  var given = /^#token=([A-Za-z0-9_\-.~]{16,512})$/.exec(location.hash);
  history.replaceState(null, '', location.pathname + location.search);  // out of the address bar and history
  var form = document.querySelector('form.login');
  if (!form || !given) return;
  form.querySelector('input[name=token]').value = given[1];
  form.submit();
})();
