// The task this page is running: submit, live progress and previews over SSE, queue position,
// Stop and Skip, and the result handed to the gallery. Survives a reload (the task id is kept
// in localStorage) and a dropped connection (the event stream resumes).

import * as api from './api.js';
import { $, toast } from './dom.js';

const ACTIVE_STORE = 'fooocus.activeTask';
const TITLE = document.title;

function remember(taskId) {
  try {
    if (taskId) localStorage.setItem(ACTIVE_STORE, taskId);
    else localStorage.removeItem(ACTIVE_STORE);
  } catch {
    // storage unavailable: the task just won't be resumed after a reload
  }
}

function recordEvent(record) {
  const preview = record.preview ? `data:image/jpeg;base64,${record.preview}` : null;
  return {
    task_id: record.task_id, status: record.task_status, progress: record.progress, preview,
    message: record.task_status === 'pending' ? 'Waiting in queue …' : '', images: record.result,
    seeds: record.seeds, error: record.error, queue_position: record.queue_position,
  };
}

export class Runner {
  constructor({ form, gallery, onAuth, onDone }) {
    this.form = form;
    this.gallery = gallery;
    this.onAuth = onAuth;
    this.onDone = onDone;
    this.active = null;
    this.watch = null;
    this.el = {
      stage: $('#stage'), img: $('#stage-img'), empty: $('#stage-empty'), overlay: $('#stage-overlay'),
      bar: $('#progress'), fill: $('#progress-fill'), message: $('#progress-message'),
      percent: $('#progress-percent'), queue: $('#queue-badge'), generate: $('#generate'),
      stop: $('#stop'), skip: $('#skip'), error: $('#form-error'), messages: $('#messages'),
    };
    this.el.stop.addEventListener('click', () => this.control('stop'));
    this.el.skip.addEventListener('click', () => this.control('skip'));
  }

  banner(el, text) {
    el.textContent = text || '';
    el.hidden = !text;
  }

  /** Show an API error next to its field (or above the gallery when it names none). */
  showError(err) {
    if (err instanceof api.ApiError && err.isAuth) {
      this.onAuth?.(err);
      return;
    }
    if (err instanceof api.ApiError && err.field && this.form.showError(err.field, err.message)) {
      this.banner(this.el.error, `Please check the highlighted field (${err.field}).`);
      return;
    }
    this.banner(this.el.error, err.message || String(err));
  }

  async submit() {
    if (this.active || this.submitting) return;
    this.form.clearErrors();
    this.banner(this.el.error, '');
    this.banner(this.el.messages, '');
    const body = { ...this.form.serialize(), async_process: true };
    this.submitting = true;
    this.el.generate.disabled = true;
    this.el.generate.textContent = 'Submitting…';
    try {
      const record = await api.post('/v1/engine/generate/', body);
      this.attach(record.task_id, record);
    } catch (err) {
      this.showError(err);
      this.setIdle();
    } finally {
      this.submitting = false;
    }
  }

  /** Follow a task (just submitted, or found running after a reload). */
  attach(taskId, record = null) {
    this.watch?.close();
    this.active = { taskId, previews: 0, status: 'pending' };
    remember(taskId);
    const { stage, overlay, generate, stop, skip, empty } = this.el;
    stage.dataset.taskId = taskId;
    stage.dataset.previews = '0';
    stage.dataset.reconnects = '0';
    stage.dataset.state = 'pending';
    empty.hidden = true;
    overlay.hidden = false;
    generate.hidden = true;
    stop.hidden = false;
    stop.disabled = false;
    skip.hidden = false;
    skip.disabled = true;
    this.setProgress(0, 'Submitted …');
    if (record) this.onEvent(recordEvent(record));
    this.watch = api.watchTask(taskId, {
      onEvent: (event) => this.onEvent(event),
      onStatus: (status) => {
        stage.dataset.stream = status;
        if (status === 'reconnecting') stage.dataset.reconnects = String(Number(stage.dataset.reconnects || 0) + 1);
        if (status === 'reconnecting' && this.active) this.el.message.textContent = 'Connection lost, resuming …';
      },
      onFatal: (err) => {
        if (err.isAuth) this.onAuth?.(err);
        else this.banner(this.el.error, err.message);
        this.finishLocal();
      },
    });
  }

  /** Resume the task this browser was following before a reload, if it is still going. */
  async resume() {
    let taskId = null;
    try {
      taskId = localStorage.getItem(ACTIVE_STORE);
    } catch {
      return;
    }
    if (!taskId || this.active) return;
    try {
      const record = await api.get(`/tasks/${encodeURIComponent(taskId)}`);
      if (api.TERMINAL.has(record.task_status)) remember(null);
      else this.attach(taskId, record);
    } catch {
      remember(null);
    }
  }

  setProgress(percent, message) {
    const value = Math.max(0, Math.min(100, Math.round(percent || 0)));
    this.el.fill.style.width = `${value}%`;
    this.el.bar.setAttribute('aria-valuenow', String(value));
    this.el.percent.textContent = `${value}%`;
    if (message !== undefined) this.el.message.textContent = message;
    document.title = this.active && !api.TERMINAL.has(this.active.status)
      ? `${value}% · ${TITLE}` : TITLE;
  }

  /** Tell screen readers about status changes (not every step). */
  announce(status, text) {
    if (this.announced === status) return;
    this.announced = status;
    $('#run-status').textContent = text;
  }

  onEvent(event) {
    if (!this.active || event.task_id !== this.active.taskId) return;
    const { stage, queue, skip, img } = this.el;
    this.active.status = event.status;
    const spoken = {
      pending: 'Waiting in the queue.', running: 'Generating.', finished: 'Finished.',
      stop: 'Stopped.', failed: `Failed: ${event.error || ''}`,
    };
    this.announce(event.status, spoken[event.status] || event.status);
    stage.dataset.state = event.status;
    if (event.status === 'pending') {
      const pos = event.queue_position;
      queue.hidden = pos === null || pos === undefined;
      queue.textContent = pos === 0 ? 'Next in queue' : `${pos} ahead in queue`;
      this.setProgress(0, pos === 0 ? 'Waiting for the running task …' : `Waiting in queue (position ${pos + 1}) …`);
      return;
    }
    queue.hidden = true;
    if (event.status === 'running') {
      skip.disabled = false;
      this.setProgress(event.progress, event.message || 'Running …');
      if (event.preview) {
        img.src = event.preview;
        img.hidden = false;
        img.alt = 'Live preview';
        this.active.previews += 1;
        stage.dataset.previews = String(this.active.previews);
      }
      return;
    }
    this.finish(event);
  }

  async finish(event) {
    const { taskId } = this.active;
    const { img, stage } = this.el;
    this.watch?.close();
    if (event.status === 'finished') {
      this.setProgress(100, event.images.length ? `Finished: ${event.images.length} image${event.images.length > 1 ? 's' : ''}` : 'Finished without images');
      if (event.images.length) {
        img.src = event.images[0];
        img.alt = `Result, seed ${event.seeds[0]}`;
        img.hidden = false;
        this.gallery.add(taskId, event.images, event.seeds);
      }
    } else if (event.status === 'stop') {
      this.setProgress(event.progress, 'Stopped');
      if (event.images?.length) this.gallery.add(taskId, event.images, event.seeds);
    } else {
      this.setProgress(event.progress, 'Failed');
      this.banner(this.el.error, `Generation failed: ${event.error || 'unknown error'}`);
    }
    stage.dataset.state = event.status;
    this.finishLocal();
    try {
      const record = await api.get(`/tasks/${encodeURIComponent(taskId)}`);
      const notes = (record.messages || []).filter((m) => m && m !== 'canceled before it started');
      if (notes.length) this.banner(this.el.messages, notes.join(' · '));
    } catch {
      // the notes are optional
    }
    this.onDone?.(taskId, event);
  }

  finishLocal() {
    this.active = null;
    this.announced = null;
    document.title = TITLE;
    remember(null);
    this.setIdle();
  }

  setIdle() {
    const { generate, stop, skip, queue } = this.el;
    generate.hidden = false;
    generate.disabled = false;
    generate.textContent = 'Generate';
    stop.hidden = true;
    skip.hidden = true;
    queue.hidden = true;
  }

  async control(action) {
    if (!this.active) return;
    const button = action === 'stop' ? this.el.stop : this.el.skip;
    button.disabled = true;
    try {
      const answer = await api.post('/v1/engine/control', { action, task_id: this.active.taskId });
      toast(answer?.message ? answer.message.replace('stoped', 'stopped').replace('skiped', 'skipped') : `${action} sent`);
      if (action === 'skip') setTimeout(() => { if (this.active) button.disabled = false; }, 800);
    } catch (err) {
      button.disabled = false;
      this.showError(err);
    }
  }
}
