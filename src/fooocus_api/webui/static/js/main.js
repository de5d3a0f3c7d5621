// Entry point: connect to the API, build the form from the server's choices and preset, wire
// the views, the connection dialog and the theme.

import * as api from './api.js';
import { $, toast } from './dom.js';
import { GenerationForm } from './fields.js';
import { Gallery, Viewer } from './gallery.js';
import { History } from './history.js';
import { setupImageInputs } from './imageinputs.js';
import { Runner } from './run.js';
import { selectTab, setupTabs } from './tabs.js';

const THEMES = ['auto', 'light', 'dark'];
const THEME_STORE = 'fooocus.theme';

const app = { form: null, runner: null, history: null, gallery: null, viewer: null, ready: false };
window.fooocus = app; // for debugging and the browser tests

function setConn(state, text) {
  const conn = $('#conn');
  conn.dataset.state = state;
  conn.textContent = text;
}

// --- theme ------------------------------------------------------------------------------------

function applyTheme(theme) {
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  $('#theme-label').textContent = theme[0].toUpperCase() + theme.slice(1);
}

function setupTheme() {
  let theme = 'auto';
  try {
    theme = localStorage.getItem(THEME_STORE) || 'auto';
  } catch {
    // no storage: stay on auto
  }
  if (!THEMES.includes(theme)) theme = 'auto';
  applyTheme(theme);
  $('#theme-btn').addEventListener('click', () => {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    applyTheme(theme);
    try {
      localStorage.setItem(THEME_STORE, theme);
    } catch {
      // not remembered
    }
  });
}

// --- connection settings (API key, API URL) ---------------------------------------------------

function openSettings(reason = '') {
  const dialog = $('#settings');
  const reasonEl = $('#settings-reason');
  reasonEl.textContent = reason;
  reasonEl.hidden = !reason;
  $('#settings-key').value = api.settings.apiKey;
  $('#settings-url').value = api.settings.apiUrlOverride;
  $('#settings-url').placeholder = api.settings.defaultApiUrl;
  if (!dialog.open) dialog.showModal();
  $('#settings-key').focus();
}

function setupSettings() {
  const dialog = $('#settings');
  $('#settings-btn').addEventListener('click', () => openSettings());
  $('#boot-settings').addEventListener('click', () => openSettings());
  $('#settings-cancel').addEventListener('click', () => dialog.close());
  $('#settings-forget').addEventListener('click', () => {
    api.settings.apiKey = '';
    $('#settings-key').value = '';
    toast('API key forgotten');
  });
  $('#settings-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const url = $('#settings-url').value.trim();
    if (url) {
      try {
        const parsed = new URL(url);
        if (!/^https?:$/.test(parsed.protocol)) throw new Error('bad scheme');
      } catch {
        $('#settings-url').setAttribute('aria-invalid', 'true');
        toast('The API URL must start with http:// or https://', 'error');
        return;
      }
    }
    $('#settings-url').removeAttribute('aria-invalid');
    api.settings.apiKey = $('#settings-key').value.trim();
    api.settings.apiUrlOverride = url;
    dialog.close();
    boot();
  });
}

function onAuth(err) {
  setConn('locked', 'API key needed');
  openSettings(err.status === 401 ? 'This server needs an API key.' : 'The API key was refused; check it.');
}

// --- boot ---------------------------------------------------------------------------------------

async function requestSchema() {
  try {
    const response = await fetch(`${api.settings.apiUrl}/openapi.json`, { cache: 'no-store' });
    if (!response.ok) return {};
    const doc = await response.json();
    return doc?.components?.schemas?.CommonRequest?.properties || {};
  } catch {
    return {};
  }
}

async function refreshReadiness() {
  try {
    const ready = await api.get('/readyz');
    setConn('online', ready.engine_loaded ? `Online · ${ready.loaded_model}` : 'Online · model loads on first use');
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 503) setConn('offline', 'Engine unavailable');
  }
}

// The server says when its default model is missing and what stands in for it (the starter model).
function showModelNotice(models) {
  const box = $('#model-notice');
  box.hidden = !models.notice;
  if (!models.notice) return;
  $('#model-notice-title').textContent = models.starter_fallback
    ? 'Using the built-in starter model: 64×64 pictures of simple shapes only'
    : 'The default model is not available';
  $('#model-notice-text').textContent = models.notice;
}

let booting = null;

async function boot() {
  if (booting) return booting;
  booting = (async () => {
    $('#boot-error').hidden = true;
    setConn('connecting', 'Connecting…');
    try {
      const [features, models, styles, preset, schema] = await Promise.all([
        api.get('/v1/engines/features'), api.get('/v1/engines/all-models'),
        api.get('/v1/engines/styles'), api.get('/v1/engines/presets/initial'), requestSchema(),
      ]);
      if (!app.form) {
        app.form = new GenerationForm($('#gen-form'), { schema });
        app.form.setChoices({ features, models, styles, presets: models.presets || [] });
        setupImageInputs(app.form, features);
        app.form.applyRequestDefaults();
        app.form.globalPreset = preset.name;
        app.form.applyPreset(preset, { keepPrompt: true });
        wireForm();
      } else {
        app.form.setChoices({ features, models, styles, presets: models.presets || [] });
      }
      showModelNotice(models);
      $('#generate').disabled = Boolean(app.runner?.active);
      app.ready = true;
      document.body.dataset.ready = 'true';
      setConn('online', 'Online');
      refreshReadiness();
      app.runner.resume();
    } catch (err) {
      if (err instanceof api.ApiError && err.isAuth) {
        onAuth(err);
        return;
      }
      setConn('offline', 'Offline');
      $('#boot-error-text').textContent = `${err.message}. Is the service running?`;
      $('#boot-error').hidden = false;
    }
  })();
  try {
    await booting;
  } finally {
    booting = null;
  }
}

function useParams(params, seed) {
  selectTab($('#tab-create'));
  const apply = () => {
    app.form.applyParams(params, { seed });
    app.form.clearErrors();
    toast(seed !== undefined && seed !== null ? `Parameters applied (seed ${seed})` : 'Parameters applied');
    $('#prompt').focus();
  };
  const name = params.preset && params.preset !== 'initial' ? params.preset : app.form.globalPreset;
  if (name && name !== app.form.fields.get('preset').get()) {
    api.get(`/v1/engines/presets/${encodeURIComponent(name)}`)
      .then((preset) => app.form.applyPreset(preset))
      .catch(() => {})
      .finally(apply);
  } else apply();
}

function wireForm() {
  const form = $('#gen-form');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    app.runner.submit();
  });
  form.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (!app.runner.active) app.runner.submit();
    }
  });
  form.addEventListener('input', (event) => {
    const container = event.target.closest('.has-error');
    if (!container) return;
    container.classList.remove('has-error');
    const slot = container.querySelector('.field-error');
    if (slot) slot.textContent = '';
    event.target.removeAttribute('aria-invalid');
  });
  const presetSelect = app.form.fields.get('preset').control;
  presetSelect.addEventListener('change', async () => {
    const name = presetSelect.value;
    try {
      const preset = await api.get(`/v1/engines/presets/${encodeURIComponent(name)}`);
      app.form.applyPreset(preset, { keepPrompt: true });
      toast(`Preset “${name}” loaded`);
    } catch (err) {
      app.runner.showError(err);
    }
  });
}

function setup() {
  setupTheme();
  setupSettings();
  setupTabs($('.views'));
  setupTabs($('#panel-tabs'));
  app.viewer = new Viewer({ onUse: useParams });
  app.gallery = new Gallery({ viewer: app.viewer });
  app.runner = new Runner({
    form: { clearErrors: () => app.form?.clearErrors(), serialize: () => app.form.serialize(),
      showError: (f, m) => app.form?.showError(f, m) },
    gallery: app.gallery,
    onAuth,
    onDone: () => {
      refreshReadiness();
      if (!$('#view-history').hidden) app.history.load(app.history.page);
    },
  });
  app.history = new History({ viewer: app.viewer, gallery: app.gallery, onUse: useParams, onAuth });
  $('.views').addEventListener('tabchange', (event) => {
    if (event.detail.tab.id === 'tab-history') app.history.load(0);
  });
  $('#boot-retry').addEventListener('click', () => boot());
  $('.skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    selectTab($('#tab-create'));
    $('#prompt').focus();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && app.ready) refreshReadiness();
  });
  boot();
}

setup();
