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
    post('/events', {name: form.elements.name.value, data: data}).then(function (answer) {
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
