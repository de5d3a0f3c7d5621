// History: the tasks of GET /tasks with paging, a date filter, thumbnails, status and delete.

import * as api from './api.js';
import { forgetRecord, taskRecord } from './gallery.js';
import { $, formatTime, h, toast } from './dom.js';

const PAGE_SIZE = 12;

function dayStart(value) {
  const [y, m, d] = value.split('-').map(Number);
  return new Date(y, m - 1, d, 0, 0, 0, 0);
}

function dayEnd(value) {
  const [y, m, d] = value.split('-').map(Number);
  return new Date(y, m - 1, d, 23, 59, 59, 999);
}

export class History {
  constructor({ viewer, gallery, onUse, onAuth }) {
    this.viewer = viewer;
    this.gallery = gallery;
    this.onUse = onUse;
    this.onAuth = onAuth;
    this.page = 0;
    this.loading = null;
    this.list = $('#history-list');
    $('#history-filter').addEventListener('submit', (event) => {
      event.preventDefault();
      this.load(0);
    });
    $('#history-reset').addEventListener('click', () => {
      $('#history-from').value = '';
      $('#history-to').value = '';
      this.load(0);
    });
    $('#history-refresh').addEventListener('click', () => this.load(this.page));
    $('#history-newer').addEventListener('click', () => this.load(Math.max(0, this.page - 1)));
    $('#history-older').addEventListener('click', () => this.load(this.page + 1));
  }

  range() {
    const from = $('#history-from').value;
    const to = $('#history-to').value;
    if (from && to && dayStart(from) > dayEnd(to)) {
      throw new Error('“From” must not be after “To”.');
    }
    return {
      start_at: from ? dayStart(from).toISOString() : undefined,
      end_at: to ? dayEnd(to).toISOString() : undefined,
    };
  }

  async load(page = 0) {
    const errorSlot = $('#history-error');
    errorSlot.textContent = '';
    let range;
    try {
      range = this.range();
    } catch (err) {
      errorSlot.textContent = err.message;
      $('#history-from').setAttribute('aria-invalid', 'true');
      return;
    }
    $('#history-from').removeAttribute('aria-invalid');
    const filtered = Boolean(range.start_at || range.end_at);
    const query = {
      query: page === 0 && !filtered ? 'all' : 'history', page, page_size: PAGE_SIZE, ...range,
    };
    this.list.setAttribute('aria-busy', 'true');
    try {
      const data = await api.get('/tasks', query);
      this.page = page;
      this.render(data, filtered);
    } catch (err) {
      if (err.isAuth) this.onAuth?.(err);
      errorSlot.textContent = err.message;
    } finally {
      this.list.removeAttribute('aria-busy');
    }
  }

  render(data, filtered) {
    const active = [...(data.current || []), ...(data.pending || [])];
    const cards = [...active, ...(data.history || [])].map((record) => this.card(record));
    this.list.replaceChildren(...cards);
    $('#history-empty').hidden = cards.length > 0;
    $('#history-empty').textContent = filtered ? 'No tasks in this range.' : 'No tasks yet.';
    $('#history-page').textContent = `Page ${this.page + 1}`;
    $('#history-newer').disabled = this.page === 0;
    $('#history-older').disabled = (data.history || []).length < PAGE_SIZE;
  }

  card(record) {
    const params = record.req_params || {};
    const status = record.task_status;
    const done = api.TERMINAL.has(status);
    const thumbs = h('div', { class: 'h-thumbs' });
    if (record.result.length) {
      record.result.slice(0, 4).forEach((url, i) => {
        const seed = record.seeds?.[i];
        const button = h('button', {
          type: 'button', class: 'thumb', 'aria-label': `Open image ${i + 1}, seed ${seed}`,
          onclick: () => this.viewer.open({ taskId: record.task_id, url, seed, opener: button }),
        }, h('img', { src: url, alt: '', loading: 'lazy', decoding: 'async' }));
        thumbs.append(button);
      });
      if (record.result.length > 4) thumbs.append(h('span', { class: 'more', text: `+${record.result.length - 4}` }));
    } else if (record.preview) {
      thumbs.append(h('img', { src: `data:image/jpeg;base64,${record.preview}`, alt: 'Live preview' }));
    } else {
      thumbs.append(h('span', { class: 'h-placeholder', text: status === 'failed' ? '!' : '—' }));
    }
    const when = formatTime(record.finish_mills || record.start_mills || record.in_queue_mills);
    const seeds = record.seeds?.length ? `seed ${record.seeds.join(', ')}` : '';
    const actions = h('div', { class: 'h-actions' });
    if (done) {
      actions.append(h('button', {
        type: 'button', class: 'btn ghost small', text: 'Use parameters',
        onclick: async () => {
          const full = await taskRecord(record.task_id).catch(() => record);
          this.onUse(full.req_params, record.seeds?.[0]);
        },
      }));
      actions.append(this.deleteButton(record));
    } else {
      actions.append(h('button', {
        type: 'button', class: 'btn ghost small', text: status === 'pending' ? 'Cancel' : 'Stop',
        onclick: async () => {
          try {
            await api.post('/v1/engine/control', { action: 'stop', task_id: record.task_id });
            setTimeout(() => this.load(this.page), 300);
          } catch (err) {
            toast(err.message, 'error');
          }
        },
      }));
    }
    const info = h('div', { class: 'h-info' },
      h('p', { class: 'h-prompt', text: params.prompt || '(no prompt)', title: params.prompt || '' }),
      h('p', { class: 'h-meta' },
        h('span', { class: `badge status-${status}`, text: status }),
        h('span', { text: when }),
        record.result.length ? h('span', { text: `${record.result.length} image${record.result.length > 1 ? 's' : ''}` }) : null,
        seeds ? h('span', { class: 'mono', text: seeds }) : null,
        record.queue_position !== null && record.queue_position !== undefined
          ? h('span', { text: `#${record.queue_position + 1} in queue` }) : null),
      record.error ? h('p', { class: 'h-error', text: record.error }) : null,
      actions);
    return h('li', { class: 'h-card', dataset: { taskId: record.task_id, status } }, thumbs, info);
  }

  deleteButton(record) {
    let armed = false;
    let timer = 0;
    const button = h('button', {
      type: 'button', class: 'btn danger-ghost small', text: 'Delete',
      'aria-label': `Delete task ${record.task_id}`,
      onclick: async () => {
        if (!armed) {
          armed = true;
          button.textContent = 'Confirm delete';
          button.classList.add('armed');
          timer = setTimeout(() => {
            armed = false;
            button.textContent = 'Delete';
            button.classList.remove('armed');
          }, 4000);
          return;
        }
        clearTimeout(timer);
        button.disabled = true;
        try {
          await api.del(`/tasks/${encodeURIComponent(record.task_id)}`);
          forgetRecord(record.task_id);
          this.gallery.remove(record.task_id);
          const card = button.closest('.h-card');
          const next = card.nextElementSibling || card.previousElementSibling;
          card.remove();
          toast('Task deleted');
          (next?.querySelector('button') || $('#history-refresh')).focus();
          if (!this.list.children.length) this.load(Math.max(0, this.page - 1));
        } catch (err) {
          button.disabled = false;
          toast(err.message, 'error');
        }
      },
    });
    return button;
  }
}
