// Small DOM helpers shared by the modules.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/**
 * Create an element: h('button', {class: 'btn', text: 'Go', onclick: fn}, child, ...).
 * Boolean DOM properties (checked, disabled, hidden) are set as properties; `false`, null
 * and undefined props are skipped. Never sets inline style attributes (the page's CSP).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (typeof value === 'boolean' || (key in el && typeof value !== 'string')) {
      el[key] = value;
    } else el.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

let toastTimer = 0;

/** A short message at the bottom of the screen. */
export function toast(message, kind = 'info') {
  const el = $('#toast');
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 3500);
}

/** "1152*896" → "1152×896 ∣ 9:7" (Fooocus' label). */
export function aspectLabel(value) {
  const match = /^(\d+)\s*[*×x]\s*(\d+)$/.exec(String(value));
  if (!match) return String(value);
  const [w, h2] = [Number(match[1]), Number(match[2])];
  const gcd = (a, b) => (b ? gcd(b, a % b) : a);
  const d = gcd(w, h2) || 1;
  return `${w}×${h2} ∣ ${w / d}:${h2 / d}`;
}

export function formatTime(ms) {
  if (!ms) return '';
  return new Date(ms).toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  });
}

/** Deep equality for the JSON-like values the form holds. */
export function same(a, b) {
  if (a === b) return true;
  if (typeof a === 'number' && typeof b === 'number') return Math.abs(a - b) < 1e-9;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, i) => same(item, b[i]));
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].every((k) => same(a[k], b[k]));
  }
  return false;
}
