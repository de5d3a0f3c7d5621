// The public REST API, as the page uses it: base URL, API key header, errors, task events.

const CONFIG = (() => {
  const el = document.getElementById('webui-config');
  try {
    return el ? JSON.parse(el.textContent) : {};
  } catch {
    return {};
  }
})();

const KEY_STORE = 'fooocus.apiKey';
const URL_STORE = 'fooocus.apiUrl';

/** An error answer of the API: `field` names the request field when the API says which. */
export class ApiError extends Error {
  constructor(status, message, field = null, body = null) {
    super(message);
    this.status = status;
    this.field = field;
    this.body = body;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

function messageOf(body, status) {
  if (body && typeof body.detail === 'string') return body.detail;
  if (body && Array.isArray(body.detail) && body.detail.length) {
    return body.detail.map((d) => d.msg).join('; ');
  }
  if (body && typeof body.message === 'string') return body.message;
  return `HTTP ${status}`;
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

export const settings = {
  get apiKey() {
    return storage()?.getItem(KEY_STORE) || '';
  },
  set apiKey(value) {
    if (value) storage()?.setItem(KEY_STORE, value);
    else storage()?.removeItem(KEY_STORE);
  },
  get apiUrlOverride() {
    return storage()?.getItem(URL_STORE) || '';
  },
  set apiUrlOverride(value) {
    if (value) storage()?.setItem(URL_STORE, value.replace(/\/+$/, ''));
    else storage()?.removeItem(URL_STORE);
  },
  /** The API's base URL: the user's override, the server's --base-url, or this host. */
  get defaultApiUrl() {
    if (CONFIG.api_url) return CONFIG.api_url.replace(/\/+$/, '');
    const port = CONFIG.api_port || 7866;
    return `${location.protocol}//${location.hostname}:${port}`;
  },
  get apiUrl() {
    return this.apiUrlOverride || this.defaultApiUrl;
  },
};

/**
 * JSON.parse that keeps integers beyond 2^53 (seeds go up to 2^63) exact, as decimal strings.
 * Uses the reviver's source text where the browser has it; elsewhere such numbers round.
 */
export function parseJSON(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value === 'number' && !Number.isSafeInteger(value) && Number.isInteger(value)
      && context && /^-?\d+$/.test(context.source)) {
      return context.source;
    }
    return value;
  });
}

/** A big integer given as decimal digits, written into JSON as a number where possible. */
export function bigInt(digits) {
  const text = String(digits).trim();
  if (!/^-?\d+$/.test(text)) return text;
  const value = Number(text);
  if (Number.isSafeInteger(value)) return value;
  return typeof JSON.rawJSON === 'function' ? JSON.rawJSON(text) : text;
}

/** One API call; resolves to the decoded JSON (or null), throws ApiError. */
export async function request(method, path, { query, body, signal } = {}) {
  const url = new URL(settings.apiUrl + path);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  }
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const key = settings.apiKey;
  if (key) headers['X-API-KEY'] = key;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, `Cannot reach the API at ${settings.apiUrl}`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = parseJSON(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!response.ok) {
    throw new ApiError(response.status, messageOf(data, response.status), data?.field ?? null, data);
  }
  return data;
}

export const get = (path, query) => request('GET', path, { query });
export const post = (path, body, query) => request('POST', path, { body, query });
export const del = (path) => request('DELETE', path);

export const TERMINAL = new Set(['finished', 'stop', 'failed']);

/**
 * Follow a task's Server-Sent Events with a browser EventSource. The API key never goes into
 * the URL: each connection gets a fresh single-use ticket. A lost connection is reopened (with
 * a new ticket) from the last event id seen, so no event is missed or repeated.
 * Returns {close(), reconnects, lastId, drop()}.
 */
export function watchTask(taskId, { onEvent, onStatus, onFatal }) {
  const state = { closed: false, source: null, lastId: 0, reconnects: 0, timer: 0 };
  const path = `/tasks/${encodeURIComponent(taskId)}/events`;

  const retry = () => {
    if (state.closed) return;
    state.reconnects += 1;
    onStatus?.('reconnecting');
    const delay = Math.min(500 * 2 ** Math.min(state.reconnects - 1, 4), 8000);
    state.timer = setTimeout(open, delay);
  };

  async function open() {
    if (state.closed) return;
    let ticket;
    try {
      ticket = (await post(`${path}/ticket`)).ticket;
    } catch (err) {
      if (err instanceof ApiError && (err.isAuth || err.status === 404)) {
        state.closed = true;
        onFatal?.(err);
        return;
      }
      retry();
      return;
    }
    if (state.closed) return;
    const url = new URL(settings.apiUrl + path);
    url.searchParams.set('ticket', ticket);
    if (state.lastId) url.searchParams.set('last_event_id', String(state.lastId));
    const source = new EventSource(url);
    state.source = source;
    source.onopen = () => onStatus?.('live');
    source.onmessage = (message) => {
      const id = Number(message.lastEventId);
      if (Number.isFinite(id) && id > 0) {
        if (id <= state.lastId) return;
        state.lastId = id;
      }
      let event;
      try {
        event = parseJSON(message.data);
      } catch {
        return;
      }
      if (TERMINAL.has(event.status)) {
        state.closed = true;
        source.close();
      }
      onEvent(event);
    };
    source.onerror = () => {
      source.close();
      if (state.source === source) state.source = null;
      retry();
    };
  }

  open();
  return {
    get reconnects() {
      return state.reconnects;
    },
    get lastId() {
      return state.lastId;
    },
    close() {
      state.closed = true;
      clearTimeout(state.timer);
      state.source?.close();
    },
    /** Drop the connection as a network failure would (used by tests and on wake-up). */
    drop() {
      state.source?.dispatchEvent(new Event('error'));
    },
  };
}
