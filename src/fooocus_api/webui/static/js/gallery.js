// Finished images with their seeds, and the full-size viewer with the task's parameters.

import * as api from './api.js';
import { $, aspectLabel, formatTime, h } from './dom.js';

const SHOWN = [
  ['prompt', 'Prompt'], ['negative_prompt', 'Negative prompt'], ['style_selections', 'Styles'],
  ['performance_selection', 'Performance'], ['aspect_ratios_selection', 'Aspect ratio'],
  ['base_model_name', 'Base model'], ['refiner_model_name', 'Refiner'], ['loras', 'LoRAs'],
  ['guidance_scale', 'Guidance scale'], ['sharpness', 'Sharpness'], ['sampler_name', 'Sampler'],
  ['scheduler_name', 'Scheduler'], ['vae_name', 'VAE'], ['overwrite_step', 'Steps override'],
  ['image_number', 'Images'], ['output_format', 'Format'], ['preset', 'Preset'],
];

function show(name, value) {
  if (value === null || value === undefined || value === '') return '—';
  if (name === 'aspect_ratios_selection') return aspectLabel(value);
  if (name === 'loras') {
    return value.length ? value.map((l) => `${l.model_name} (${l.weight})`).join(', ') : 'none';
  }
  if (Array.isArray(value)) return value.length ? value.join(', ') : 'none';
  return String(value);
}

const records = new Map();

export async function taskRecord(taskId) {
  if (!records.has(taskId)) {
    records.set(taskId, api.get(`/tasks/${encodeURIComponent(taskId)}`).catch((err) => {
      records.delete(taskId);
      throw err;
    }));
  }
  return records.get(taskId);
}

export function forgetRecord(taskId) {
  records.delete(taskId);
}

export class Viewer {
  constructor({ onUse }) {
    this.dialog = $('#viewer');
    this.onUse = onUse;
    this.current = null;
    $('#viewer-close').addEventListener('click', () => this.dialog.close());
    this.dialog.addEventListener('click', (event) => {
      if (event.target === this.dialog) this.dialog.close();
    });
    $('#viewer-use').addEventListener('click', () => {
      if (!this.current?.record) return;
      this.dialog.close();
      this.onUse(this.current.record.req_params, this.current.seed);
    });
  }

  async open({ taskId, url, seed, opener }) {
    this.current = { taskId, url, seed, record: null };
    const img = $('#viewer-img');
    img.src = url;
    img.alt = seed !== undefined && seed !== null ? `Image, seed ${seed}` : 'Image';
    $('#viewer-title').textContent = seed !== undefined && seed !== null ? `Seed ${seed}` : 'Image';
    $('#viewer-open').href = url;
    $('#viewer-sub').textContent = 'Loading parameters …';
    $('#viewer-params').replaceChildren();
    $('#viewer-use').disabled = true;
    this.opener = opener || document.activeElement;
    if (!this.dialog.open) this.dialog.showModal();
    $('#viewer-close').focus();
    try {
      const record = await taskRecord(taskId);
      if (this.current?.taskId !== taskId) return;
      this.current.record = record;
      this.renderParams(record, seed);
      $('#viewer-use').disabled = false;
    } catch (err) {
      $('#viewer-sub').textContent = `Parameters unavailable: ${err.message}`;
    }
  }

  renderParams(record, seed) {
    const params = record.req_params || {};
    $('#viewer-sub').textContent = `${record.task_status} · ${formatTime(record.finish_mills || record.in_queue_mills)}`;
    const rows = [];
    rows.push(h('dt', { text: 'Seed' }), h('dd', { class: 'mono', text: seed ?? '—' }));
    for (const [name, label] of SHOWN) {
      if (!(name in params)) continue;
      rows.push(h('dt', { text: label }), h('dd', { text: show(name, params[name]) }));
    }
    const all = h('details', { class: 'all-params' }, h('summary', { text: 'All parameters' }),
      h('pre', { class: 'mono', text: JSON.stringify(params, null, 2) }));
    $('#viewer-params').replaceChildren(...rows, h('div', { class: 'params-all' }, all));
  }
}

export class Gallery {
  constructor({ viewer }) {
    this.viewer = viewer;
    this.list = $('#gallery');
    this.empty = $('#gallery-empty');
    this.clearButton = $('#gallery-clear');
    this.clearButton.addEventListener('click', () => {
      this.list.replaceChildren();
      this.update();
    });
  }

  add(taskId, urls, seeds) {
    const items = urls.map((url, i) => {
      const seed = seeds?.[i];
      const button = h('button', {
        type: 'button', class: 'thumb', 'aria-label': `Open image ${i + 1}, seed ${seed}`,
        onclick: () => this.viewer.open({ taskId, url, seed, opener: button }),
      }, h('img', { src: url, alt: '', loading: 'lazy', decoding: 'async' }),
      h('span', { class: 'seed mono', text: `Seed ${seed}` }));
      return h('li', { class: 'gallery-item', dataset: { taskId, seed: String(seed) } }, button);
    });
    this.list.prepend(...items);
    this.update();
  }

  remove(taskId) {
    for (const item of [...this.list.children]) if (item.dataset.taskId === taskId) item.remove();
    this.update();
  }

  update() {
    const any = this.list.children.length > 0;
    this.empty.hidden = any;
    this.clearButton.hidden = !any;
  }
}
