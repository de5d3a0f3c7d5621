// The generation form: field specs, widgets, reading and writing values, preset defaults,
// and errors shown next to the field the API names.

import { bigInt } from './api.js';
import { $, $$, aspectLabel, h, same } from './dom.js';
import { revealPanelOf } from './tabs.js';

/** Request fields whose default comes from the preset (sent only when they differ from it). */
export const PRESET_FIELDS = [
  'prompt', 'negative_prompt', 'style_selections', 'performance_selection',
  'aspect_ratios_selection', 'sharpness', 'guidance_scale', 'base_model_name',
  'refiner_model_name', 'refiner_switch', 'loras', 'adaptive_cfg', 'clip_skip', 'sampler_name',
  'scheduler_name', 'vae_name', 'overwrite_step', 'overwrite_switch',
];

const SETTING = [
  { name: 'preset', label: 'Preset', kind: 'select', source: 'presets', transient: true,
    hint: 'Loads the preset\'s defaults into the form.' },
  { name: 'performance_selection', label: 'Performance', kind: 'radio', source: 'performances' },
  { name: 'aspect_ratios_selection', label: 'Aspect ratio', kind: 'select', source: 'aspect_ratios',
    format: aspectLabel },
  { name: 'image_number', label: 'Image number', kind: 'slider', min: 1, max: 32, step: 1, int: true },
  { name: 'output_format', label: 'Output format', kind: 'radio', source: 'output_formats' },
  { name: 'image_seed', label: 'Seed', kind: 'seed' },
  { name: 'negative_prompt', label: 'Negative prompt', kind: 'textarea',
    placeholder: 'What to keep out of the image' },
];

const MODELS = [
  { name: 'base_model_name', label: 'Base model', kind: 'select', source: 'models' },
  { name: 'refiner_model_name', label: 'Refiner', kind: 'select', source: 'refiners' },
  { name: 'refiner_switch', label: 'Refiner switch at', kind: 'slider', min: 0.1, max: 1, step: 0.01 },
  { name: 'loras', label: 'LoRAs', kind: 'loras' },
  { name: 'vae_name', label: 'VAE', kind: 'select', source: 'vaes' },
];

const ADVANCED = [
  { group: 'Guidance and sampling', open: true, fields: [
    { name: 'guidance_scale', label: 'Guidance scale', kind: 'slider', min: 1, max: 30, step: 0.5,
      hint: 'Higher follows the prompt more strictly.' },
    { name: 'sharpness', label: 'Image sharpness', kind: 'slider', min: 0, max: 30, step: 0.1 },
    { name: 'sampler_name', label: 'Sampler', kind: 'select', source: 'samplers' },
    { name: 'scheduler_name', label: 'Scheduler', kind: 'select', source: 'schedulers' },
    { name: 'adaptive_cfg', label: 'CFG mimicking from TSNR', kind: 'slider', min: 1, max: 30, step: 0.5 },
    { name: 'clip_skip', label: 'CLIP skip', kind: 'slider', min: 1, max: 12, step: 1, int: true },
  ] },
  { group: 'Overrides (−1 = off)', fields: [
    { name: 'overwrite_step', label: 'Steps', kind: 'number', min: -1, max: 200, step: 1, int: true },
    { name: 'overwrite_switch', label: 'Refiner switch step', kind: 'number', min: -1, step: 1, int: true },
    { name: 'overwrite_width', label: 'Width', kind: 'number', min: -1, max: 2048, step: 8, int: true },
    { name: 'overwrite_height', label: 'Height', kind: 'number', min: -1, max: 2048, step: 8, int: true },
  ] },
  { group: 'ADM guidance', fields: [
    { name: 'adm_scaler_positive', label: 'Positive ADM scale', kind: 'slider', min: 0, max: 3, step: 0.01 },
    { name: 'adm_scaler_negative', label: 'Negative ADM scale', kind: 'slider', min: 0, max: 3, step: 0.01 },
    { name: 'adm_scaler_end', label: 'ADM guidance end at', kind: 'slider', min: 0, max: 1, step: 0.01 },
    { name: 'refiner_swap_method', label: 'Refiner swap method', kind: 'select',
      options: ['joint', 'separate', 'vae'] },
  ] },
  { group: 'FreeU', fields: [
    { name: 'freeu_enabled', label: 'Enable FreeU', kind: 'checkbox' },
    { name: 'freeu_b1', label: 'B1', kind: 'number', step: 0.01 },
    { name: 'freeu_b2', label: 'B2', kind: 'number', step: 0.01 },
    { name: 'freeu_s1', label: 'S1', kind: 'number', step: 0.01 },
    { name: 'freeu_s2', label: 'S2', kind: 'number', step: 0.01 },
  ] },
  { group: 'Output and behaviour', fields: [
    { name: 'save_metadata_to_images', label: 'Save metadata to images', kind: 'checkbox' },
    { name: 'metadata_scheme', label: 'Metadata scheme', kind: 'select', options: ['fooocus', 'a1111'] },
    { name: 'save_name', label: 'File name', kind: 'text', nullable: true,
      placeholder: 'automatic', hint: 'Plain name, no folders; files become name-1.png, …' },
    { name: 'read_wildcards_in_order', label: 'Read wildcards in order', kind: 'checkbox' },
    { name: 'disable_seed_increment', label: 'Same seed for every image', kind: 'checkbox' },
    { name: 'disable_preview', label: 'No live previews', kind: 'checkbox' },
    { name: 'disable_intermediate_results', label: 'No intermediate results', kind: 'checkbox' },
    { name: 'generate_image_grid', label: 'Generate image grid', kind: 'checkbox' },
    { name: 'black_out_nsfw', label: 'Black out NSFW', kind: 'checkbox' },
  ] },
  { group: 'Delivery', fields: [
    { name: 'webhook_url', label: 'Webhook URL', kind: 'text', type: 'url',
      placeholder: 'https://…', hint: 'The finished record is POSTed here.' },
  ] },
];

/** Fallbacks for request defaults (the server's /openapi.json overrides them). */
const FALLBACK_DEFAULTS = {
  image_number: 1, output_format: 'png', image_seed: -1, overwrite_width: -1, overwrite_height: -1,
  adm_scaler_positive: 1.5, adm_scaler_negative: 0.8, adm_scaler_end: 0.3,
  refiner_swap_method: 'joint', freeu_enabled: false, freeu_b1: 1.01, freeu_b2: 1.02,
  freeu_s1: 0.99, freeu_s2: 0.95, save_metadata_to_images: true, metadata_scheme: 'fooocus',
  save_name: null, read_wildcards_in_order: false, disable_seed_increment: false,
  disable_preview: false, disable_intermediate_results: false, generate_image_grid: false,
  black_out_nsfw: false, webhook_url: '',
};

export const idFor = (name) => `f-${name.replace(/[^A-Za-z0-9_-]+/g, '-')}`;

function errorSlot(name) {
  return h('p', { class: 'field-error', id: `${idFor(name)}-error` });
}

function hintOf(spec) {
  return spec.hint ? h('p', { class: 'hint', id: `${idFor(spec.name)}-hint`, text: spec.hint }) : null;
}

function describedBy(spec) {
  const ids = [`${idFor(spec.name)}-error`];
  if (spec.hint) ids.push(`${idFor(spec.name)}-hint`);
  return ids.join(' ');
}

function toNumber(raw, int) {
  if (raw === '' || raw === null || raw === undefined) return null;
  const value = Number(raw);
  if (!Number.isFinite(value)) return raw;
  return int && Number.isInteger(value) ? value : value;
}

/** A searchable multi-select of styles; keeps the order in which styles were picked. */
class StylePicker {
  constructor(name) {
    this.name = name;
    this.selected = [];
    this.search = h('input', {
      type: 'search', class: 'style-search', id: idFor(name), placeholder: 'Search styles',
      'aria-label': 'Search styles', 'aria-controls': `${idFor(name)}-list`,
      'aria-describedby': `${idFor(name)}-error ${idFor(name)}-count`,
    });
    this.chips = h('div', { class: 'chips', 'aria-label': 'Selected styles', role: 'group' });
    this.count = h('p', { class: 'hint', id: `${idFor(name)}-count` });
    this.list = h('div', { class: 'style-list', id: `${idFor(name)}-list`, role: 'group',
      'aria-label': 'Styles' });
    this.search.addEventListener('input', () => this.filter());
    this.search.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        const first = $$('input', this.list).find((box) => !box.closest('label').hidden);
        if (first) first.click();
      }
    });
    this.list.addEventListener('change', (event) => {
      const box = event.target;
      if (box.checked) this.selected.push(box.value);
      else this.selected = this.selected.filter((s) => s !== box.value);
      this.renderChips();
    });
    this.element = h('div', { class: 'field styles-field', dataset: { field: name } },
      h('div', { class: 'styles-head' }, this.search, this.count), this.chips, this.list,
      errorSlot(name));
  }

  setOptions(names) {
    this.list.replaceChildren(...names.map((style) => h('label', { class: 'style-option' },
      h('input', { type: 'checkbox', value: style }), h('span', { text: style }))));
    this.set(this.selected);
  }

  filter() {
    const query = this.search.value.trim().toLowerCase();
    let shown = 0;
    for (const label of this.list.children) {
      const match = !query || label.textContent.toLowerCase().includes(query);
      label.hidden = !match;
      if (match) shown += 1;
    }
    this.count.textContent = query ? `${shown} match` : `${this.list.children.length} styles`;
  }

  renderChips() {
    this.chips.replaceChildren(...this.selected.map((style) => h('button', {
      type: 'button', class: 'chip', 'aria-label': `Remove style ${style}`,
      onclick: () => this.set(this.selected.filter((s) => s !== style)),
    }, style, h('span', { 'aria-hidden': 'true', text: '×' }))));
    if (!this.selected.length) this.chips.append(h('span', { class: 'muted', text: 'No style' }));
    this.filter();
  }

  get() {
    return [...this.selected];
  }

  set(values) {
    const known = new Set($$('input', this.list).map((box) => box.value));
    this.selected = (values || []).filter((v) => known.size === 0 || known.has(v));
    const chosen = new Set(this.selected);
    for (const box of $$('input', this.list)) box.checked = chosen.has(box.value);
    this.renderChips();
  }
}

/** The LoRA slots: enabled, file, weight. */
class LoraSlots {
  constructor(name) {
    this.name = name;
    this.rows = [];
    this.body = h('div', { class: 'lora-rows' });
    this.element = h('fieldset', { class: 'field loras-field', dataset: { field: name } },
      h('legend', { text: 'LoRAs' }), this.body, errorSlot(name));
    this.files = [];
    this.min = -2;
    this.max = 2;
  }

  configure(count, files, min, max, downloadable = []) {
    const values = this.rows.length ? this.get() : [];
    this.files = files;
    this.downloadable = downloadable;
    this.min = min;
    this.max = max;
    this.rows = [];
    const rows = [];
    for (let i = 0; i < Math.max(1, count); i += 1) {
      const base = `${this.name}[${i}]`;
      const enabled = h('input', { type: 'checkbox', id: idFor(`${base}.enabled`), checked: true,
        'aria-label': `LoRA ${i + 1} enabled` });
      const model = h('select', { id: idFor(`${base}.model_name`), 'aria-label': `LoRA ${i + 1} file`,
        'aria-describedby': `${idFor(`${base}.model_name`)}-error` });
      const weight = h('input', { type: 'number', id: idFor(`${base}.weight`), min, max, step: 0.01,
        class: 'num', 'aria-label': `LoRA ${i + 1} weight`,
        'aria-describedby': `${idFor(`${base}.weight`)}-error` });
      const range = h('input', { type: 'range', min, max, step: 0.01, tabindex: '-1',
        'aria-hidden': 'true' });
      linkRange(range, weight);
      rows.push(h('div', { class: 'lora-row', dataset: { field: base } },
        enabled, model,
        h('div', { class: 'lora-weight', dataset: { field: `${base}.weight` } }, range, weight,
          errorSlot(`${base}.weight`)),
        h('div', { class: 'lora-error', dataset: { field: `${base}.model_name` } },
          errorSlot(`${base}.model_name`)),
        errorSlot(base)));
      this.rows.push({ enabled, model, weight, range });
    }
    this.body.replaceChildren(...rows);
    this.set(values);
  }

  fillOptions(select, current) {
    const names = ['None', ...this.files];
    if (current && !names.includes(current)) names.push(current);
    select.replaceChildren(...names.map((file) => h('option', {
      value: file,
      text: this.label(file),
    })));
    select.value = current || 'None';
  }

  label(file) {
    if (file === 'None' || this.files.includes(file)) return file;
    return this.downloadable?.includes(file) ? `${file} (downloads on first use)` : `${file} (not installed)`;
  }

  get() {
    return this.rows.map((row) => ({
      enabled: row.enabled.checked,
      model_name: row.model.value || 'None',
      weight: toNumber(row.weight.value, false),
    }));
  }

  set(values) {
    this.rows.forEach((row, i) => {
      const slot = values?.[i] || { enabled: true, model_name: 'None', weight: 1 };
      row.enabled.checked = slot.enabled !== false;
      this.fillOptions(row.model, slot.model_name || 'None');
      row.weight.value = String(slot.weight ?? 1);
      row.range.value = row.weight.value;
    });
  }
}

function linkRange(range, number) {
  range.addEventListener('input', () => {
    number.value = range.value;
    number.dispatchEvent(new Event('input', { bubbles: true }));
  });
  number.addEventListener('input', () => {
    if (number.value !== '') range.value = number.value;
  });
}

export class GenerationForm {
  /**
   * @param {HTMLFormElement} form
   * @param {object} server {features, models, styles, presetDefaults, schema}
   */
  constructor(form, server) {
    this.form = form;
    this.fields = new Map();
    this.sources = {};
    this.preset = null;
    this.globalPreset = null;
    this.schema = server.schema || {};
    this.defaults = { ...FALLBACK_DEFAULTS };
    for (const [name, prop] of Object.entries(this.schema)) {
      if (prop && 'default' in prop) this.defaults[name] = prop.default;
    }
    this.registerPrompt();
    this.build($('#ppanel-setting'), SETTING);
    this.styles = new StylePicker('style_selections');
    $('#ppanel-styles').append(this.styles.element);
    this.fields.set('style_selections', {
      spec: { name: 'style_selections' }, element: this.styles.element, control: this.styles.search,
      get: () => this.styles.get(), set: (v) => this.styles.set(v),
    });
    this.build($('#ppanel-models'), MODELS);
    const advanced = $('#ppanel-advanced');
    for (const group of ADVANCED) {
      const body = h('div', { class: 'group-body' });
      advanced.append(h('details', { class: 'group', open: Boolean(group.open) },
        h('summary', { text: group.group }), body));
      this.build(body, group.fields);
    }
  }

  registerPrompt() {
    const control = $('#prompt');
    this.fields.set('prompt', {
      spec: { name: 'prompt', kind: 'textarea' }, element: control.closest('.field'), control,
      get: () => control.value, set: (v) => { control.value = v ?? ''; },
    });
    control.setAttribute('aria-describedby', 'prompt-error');
    $('#prompt-error').id = `${idFor('prompt')}-error`;
    control.setAttribute('aria-describedby', `${idFor('prompt')}-error`);
  }

  build(container, specs) {
    for (const spec of specs) {
      const field = this.widget(spec);
      this.fields.set(spec.name, field);
      container.append(field.element);
    }
  }

  widget(spec) {
    const id = idFor(spec.name);
    const range = (name) => this.schema[name] || {};
    const min = range(spec.name).minimum ?? spec.min;
    const max = range(spec.name).maximum ?? spec.max;
    if (spec.kind === 'loras') {
      const slots = new LoraSlots(spec.name);
      this.loras = slots;
      return { spec, element: slots.element, control: null, get: () => slots.get(),
        set: (v) => slots.set(v) };
    }
    if (spec.kind === 'checkbox') {
      const control = h('input', { type: 'checkbox', id, 'aria-describedby': describedBy(spec) });
      const element = h('div', { class: 'field check', dataset: { field: spec.name } },
        h('label', { for: id }, control, h('span', { text: spec.label })), hintOf(spec),
        errorSlot(spec.name));
      return { spec, element, control, get: () => control.checked,
        set: (v) => { control.checked = Boolean(v); } };
    }
    if (spec.kind === 'radio') {
      const group = h('div', { class: 'segmented', role: 'radiogroup', 'aria-labelledby': `${id}-label` });
      const element = h('div', { class: 'field', dataset: { field: spec.name } },
        h('span', { class: 'label', id: `${id}-label`, text: spec.label }), group, hintOf(spec),
        errorSlot(spec.name));
      const field = {
        spec, element, group,
        get control() {
          return group.querySelector('input:checked') || group.querySelector('input');
        },
        get: () => group.querySelector('input:checked')?.value ?? null,
        set: (v) => {
          let match = false;
          for (const input of group.querySelectorAll('input')) {
            input.checked = input.value === v;
            match ||= input.checked;
          }
          if (!match && v) {
            field.options([...[...group.querySelectorAll('input')].map((i) => i.value), v]);
            field.set(v);
          }
        },
        options: (values) => {
          const current = field.get();
          group.replaceChildren(...values.map((value, i) => {
            const inputId = `${id}-${i}`;
            return h('span', { class: 'seg' },
              h('input', { type: 'radio', name: spec.name, id: inputId, value,
                'aria-describedby': describedBy(spec) }),
              h('label', { for: inputId, text: value }));
          }));
          if (current) field.set(current);
        },
      };
      return field;
    }
    if (spec.kind === 'seed') {
      const random = h('input', { type: 'checkbox', id: `${id}-random`, checked: true });
      const control = h('input', { type: 'number', id, min: 0, step: 1, class: 'num grow',
        inputmode: 'numeric', disabled: true, placeholder: 'random', 'aria-label': 'Seed',
        'aria-describedby': describedBy(spec) });
      random.addEventListener('change', () => {
        control.disabled = random.checked;
        if (!random.checked && control.value === '') {
          control.value = String(Math.floor(Math.random() * 2 ** 31));
        }
      });
      const element = h('div', { class: 'field', dataset: { field: spec.name } },
        h('span', { class: 'label', text: 'Seed' }),
        h('div', { class: 'seed-row' },
          h('label', { class: 'check inline', for: `${id}-random` }, random, h('span', { text: 'Random' })),
          control),
        errorSlot(spec.name));
      return {
        spec, element, control,
        get: () => {
          if (random.checked) return -1;
          return control.value.trim() === '' ? null : bigInt(control.value);
        },
        set: (v) => {
          const fixed = v !== null && v !== undefined && v !== -1 && v !== '';
          random.checked = !fixed;
          control.disabled = !fixed;
          control.value = fixed ? String(v) : '';
        },
      };
    }
    if (spec.kind === 'slider' || spec.kind === 'number') {
      const control = h('input', { type: 'number', id, min, max, step: spec.step ?? 'any',
        class: 'num', inputmode: spec.int ? 'numeric' : 'decimal', 'aria-describedby': describedBy(spec) });
      const head = h('div', { class: 'field-head' }, h('label', { for: id, text: spec.label }), control);
      const parts = [head];
      if (spec.kind === 'slider') {
        const slider = h('input', { type: 'range', min, max, step: spec.step ?? 'any',
          tabindex: '-1', 'aria-hidden': 'true' });
        linkRange(slider, control);
        parts.push(slider);
        control.addEventListener('change', () => { slider.value = control.value; });
        control.syncRange = () => { slider.value = control.value; };
      }
      const element = h('div', { class: `field ${spec.kind}`, dataset: { field: spec.name } },
        ...parts, hintOf(spec), errorSlot(spec.name));
      return { spec, element, control, get: () => toNumber(control.value, spec.int),
        set: (v) => { control.value = v === null || v === undefined ? '' : String(v); control.syncRange?.(); } };
    }
    if (spec.kind === 'select') {
      const control = h('select', { id, 'aria-describedby': describedBy(spec) });
      const element = h('div', { class: 'field', dataset: { field: spec.name } },
        h('label', { for: id, text: spec.label }), control, hintOf(spec), errorSlot(spec.name));
      const field = {
        spec, element, control, values: [], notes: {},
        get: () => control.value,
        set: (v) => {
          if (v === null || v === undefined) return;
          if (![...control.options].some((o) => o.value === String(v))) {
            field.options(field.values, field.notes, String(v));
          }
          control.value = String(v);
        },
        options: (values, notes = {}, extra = null) => {
          const current = control.value;
          field.values = values;
          field.notes = notes;
          const all = [...values];
          if (extra && !all.includes(extra)) all.push(extra);
          if (current && !all.includes(current)) all.push(current);
          control.replaceChildren(...all.map((value) => {
            let text = spec.format ? spec.format(value) : value;
            if (notes[value]) text += ` (${notes[value]})`;
            else if (!values.includes(value) && spec.source === 'models') text += ' (not installed)';
            return h('option', { value, text });
          }));
          if (current) control.value = current;
        },
      };
      if (spec.options) field.options(spec.options);
      return field;
    }
    // text and textarea
    const control = spec.kind === 'textarea'
      ? h('textarea', { id, rows: 2, placeholder: spec.placeholder, 'aria-describedby': describedBy(spec) })
      : h('input', { type: spec.type || 'text', id, placeholder: spec.placeholder,
        spellcheck: 'false', 'aria-describedby': describedBy(spec) });
    const element = h('div', { class: 'field', dataset: { field: spec.name } },
      h('label', { for: id, text: spec.label }), control, hintOf(spec), errorSlot(spec.name));
    return {
      spec, element, control,
      get: () => (spec.nullable && control.value.trim() === '' ? null : control.value),
      set: (v) => { control.value = v ?? ''; },
    };
  }

  /** Fill the choices that come from the server. */
  setChoices({ features, models, styles, presets }) {
    const field = (name) => this.fields.get(name);
    field('preset').options(presets);
    field('performance_selection').options(features.performances);
    field('output_format').options(features.output_formats);
    field('sampler_name').options(features.samplers);
    field('scheduler_name').options(features.schedulers);
    this.models = models;
    field('base_model_name').options(models.model_filenames);
    field('refiner_model_name').options(['None', ...models.model_filenames]);
    field('vae_name').options(['Default (model)', ...(models.vae_filenames || [])]);
    this.styles.setOptions(styles);
  }

  /** Put a preset's defaults into the form (the prompt too when the preset has one). */
  applyPreset(preset, { keepPrompt = true } = {}) {
    this.preset = preset;
    const downloads = preset.downloads || {};
    const notes = (kind, names) => Object.fromEntries(
      (downloads[kind] || []).filter((n) => !names.includes(n)).map((n) => [n, 'downloads on first use']));
    const models = this.models?.model_filenames || [];
    this.fields.get('base_model_name').options(models, notes('checkpoints', models));
    this.fields.get('aspect_ratios_selection').options(preset.available_aspect_ratios || []);
    this.loras.configure(preset.max_lora_number || 5, this.models?.lora_filenames || [],
      preset.lora_min_weight ?? -2, preset.lora_max_weight ?? 2, downloads.loras || []);
    for (const name of PRESET_FIELDS) {
      if (!(name in preset)) continue;
      if ((name === 'prompt' || name === 'negative_prompt') && keepPrompt && !preset[name]) continue;
      this.fields.get(name)?.set(preset[name]);
    }
    this.fields.get('preset').set(preset.name);
  }

  /** Defaults of the fields no preset sets (from the server's request schema). */
  applyRequestDefaults() {
    for (const [name, field] of this.fields) {
      if (PRESET_FIELDS.includes(name) || field.spec.transient || field.spec.imageInput) continue;
      if (name in this.defaults) field.set(this.defaults[name]);
    }
  }

  /** LoRA slots as the preset defines them, padded like the form's slots. */
  presetLoras() {
    const count = this.loras.rows.length;
    const slots = [...(this.preset?.loras || [])].slice(0, count);
    while (slots.length < count) slots.push({ enabled: true, model_name: 'None', weight: 1 });
    return slots.map((s) => ({ enabled: s.enabled !== false, model_name: s.model_name || 'None', weight: s.weight }));
  }

  /** The request body: every non-preset field, and preset fields the user changed. */
  serialize() {
    const body = {};
    for (const [name, field] of this.fields) {
      if (field.spec.transient || field.spec.imageInput) continue;
      const value = field.get();
      if (name === 'loras') {
        if (!same(value, this.presetLoras())) body.loras = value;
        continue;
      }
      if (PRESET_FIELDS.includes(name) && name !== 'prompt' && this.preset && same(value, this.preset[name])) {
        continue;
      }
      body[name] = value;
    }
    const preset = this.fields.get('preset').get();
    if (preset && preset !== this.globalPreset) body.preset = preset;
    for (const extra of this.extras || []) Object.assign(body, extra());
    return body;
  }

  /** Copy a task's parameters (its record's req_params) into the form. */
  applyParams(params, { seed } = {}) {
    for (const [name, field] of this.fields) {
      if (field.spec.transient || field.spec.imageInput || !(name in params)) continue;
      let value = params[name];
      if (name === 'aspect_ratios_selection' && typeof value === 'string') value = value.replace('×', '*');
      if (name === 'loras') {
        value = (value || []).map((l) => ({ enabled: l.enabled !== false, model_name: l.model_name, weight: l.weight }));
      }
      field.set(value);
    }
    if (seed !== undefined && seed !== null) this.fields.get('image_seed').set(seed);
  }

  clearErrors() {
    for (const slot of $$('.field-error', this.form)) slot.textContent = '';
    for (const el of $$('[aria-invalid="true"]', this.form)) el.removeAttribute('aria-invalid');
    for (const el of $$('.has-error', this.form)) el.classList.remove('has-error');
  }

  /**
   * Show `message` next to the field the API named ("loras[1].weight", "image_number", ...).
   * Returns false when no such field is on the form.
   */
  showError(fieldName, message) {
    const candidates = [];
    let name = fieldName;
    while (name) {
      candidates.push(name);
      const cut = Math.max(name.lastIndexOf('.'), name.lastIndexOf('['));
      name = cut > 0 ? name.slice(0, cut) : '';
    }
    for (const candidate of candidates) {
      const container = this.form.querySelector(`[data-field="${CSS.escape(candidate)}"]`);
      if (!container) continue;
      const slot = document.getElementById(`${idFor(candidate)}-error`);
      if (!slot) continue;
      slot.textContent = message;
      container.classList.add('has-error');
      revealPanelOf(container);
      const control = this.controlFor(candidate, container);
      if (control) {
        control.setAttribute('aria-invalid', 'true');
        control.focus({ preventScroll: false });
      }
      return true;
    }
    return false;
  }

  controlFor(name, container) {
    const field = this.fields.get(name);
    if (field?.control) return field.control;
    return document.getElementById(idFor(name)) ||
      container.querySelector('input:not([type=range]):not([disabled]), select, textarea');
  }
}
